//! The loader: the only part of `desired` that touches the filesystem or the environment. It
//! walks `recipes/` and `stacks/`, reads and parses their YAML files and `stackctl.yaml`, reads
//! the container definition files recipes name, and takes `$HOME` and the git remote's URL;
//! [`super::lift`] then validates what it read without any IO of its own.

use super::error::{SpecError, SpecErrors};
use super::layout::{CONFIG_FILE, RECIPES_DIR, STACKS_DIR};
use super::{Repo, raw, yaml};
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Loads and validates the repo at `root`.
///
/// `remote_url` is asked for the git remote's URL only when `stackctl.yaml` names no owner.
pub fn load(root: &Path, remote_url: impl FnOnce() -> Option<String>) -> Result<Repo, SpecErrors> {
    super::lift::lift(read(root, remote_url))
}

/// Everything lifting needs from a repo, read and parsed; problems met while reading are kept
/// in the order they were met, so the lifted errors come out as one walk would report them.
pub(super) struct Read {
    /// `stackctl.yaml` parsed; the defaults when the file does not exist.
    pub(super) config: Result<raw::Config, SpecError>,
    /// The git remote's URL, asked for only when `stackctl.yaml` parsed and names no owner.
    pub(super) remote_url: Option<String>,
    /// `$HOME` when set and not empty, for a leading `~` in paths read on this machine.
    pub(super) home: Option<String>,
    /// The files of `recipes/`.
    pub(super) recipes: Listing<raw::Recipe>,
    /// The files of `stacks/`.
    pub(super) stacks: Listing<raw::Stack>,
    /// The container definition files the recipes name, by their path as shown
    /// (`recipes/web/Dockerfile`): the content, or why it could not be read.
    pub(super) definitions: Definitions,
}

/// Container definition files by their path as shown (`recipes/web/Dockerfile`): the content,
/// or why it could not be read.
pub(super) type Definitions = BTreeMap<PathBuf, Result<Vec<u8>, String>>;

/// One directory's YAML files.
pub(super) struct Listing<T> {
    /// Problems with the directory and its entries (links, stray files, a failed listing).
    pub(super) problems: Vec<SpecError>,
    /// The `*.yaml` files in sorted order.
    pub(super) files: Vec<YamlFile<T>>,
}

/// One YAML file of a listing.
pub(super) struct YamlFile<T> {
    /// The path relative to the listed directory (`inference/vllm.yaml`).
    pub(super) relative: PathBuf,
    /// The parsed file, or why it could not be read or parsed.
    pub(super) parsed: Result<T, SpecError>,
}

/// Reads the repo at `root`.
fn read(root: &Path, remote_url: impl FnOnce() -> Option<String>) -> Read {
    let config = read_config(root);
    let remote_url = match &config {
        Ok(config) if config.owner.is_none() => remote_url(),
        _ => None,
    };
    let home = std::env::var("HOME").ok().filter(|h| !h.is_empty());
    let recipes = read_recipes(root);
    let definitions = read_definitions(root, &recipes);
    let stacks = read_stacks(root);
    Read {
        config,
        remote_url,
        home,
        recipes,
        stacks,
        definitions,
    }
}

/// Reads `stackctl.yaml`; a missing one means every default.
fn read_config(root: &Path) -> Result<raw::Config, SpecError> {
    let path = root.join(CONFIG_FILE);
    if path.exists() {
        read_file(&path, Path::new(CONFIG_FILE))
    } else {
        Ok(raw::Config::default())
    }
}

/// Reads every recipe file under `recipes/`; a missing `recipes/` holds no recipes.
fn read_recipes(root: &Path) -> Listing<raw::Recipe> {
    let dir = root.join(RECIPES_DIR);
    let mut problems = Vec::new();
    let paths = match yaml_files(root, &dir, true, &mut problems) {
        Ok(paths) => paths,
        Err(e) => {
            if dir.exists() {
                problems.push(SpecError::file(RECIPES_DIR, format!("cannot list: {e}")));
            }
            Vec::new()
        }
    };
    let files = paths
        .into_iter()
        .map(|path| {
            let relative = path
                .strip_prefix(&dir)
                .expect("listed under the recipes dir")
                .to_path_buf();
            let shown = Path::new(RECIPES_DIR).join(&relative);
            YamlFile {
                parsed: read_file(&path, &shown),
                relative,
            }
        })
        .collect();
    Listing { problems, files }
}

/// Reads the definition files (`container.definition`, `container.build`) the parsed recipes
/// name, from the recipe's directory. A name that is not a plain relative path is not read:
/// lifting refuses it.
fn read_definitions(root: &Path, recipes: &Listing<raw::Recipe>) -> Definitions {
    let mut definitions = Definitions::new();
    for file in &recipes.files {
        let Ok(recipe) = &file.parsed else { continue };
        let Some(container) = &recipe.container else {
            continue;
        };
        let parent = file.relative.parent().unwrap_or(Path::new(""));
        let names = [&container.definition, &container.build];
        for name in names.into_iter().flatten().map(|v| v.value.as_str()) {
            if !super::lift::is_plain_relative_path(name) {
                continue;
            }
            let shown = Path::new(RECIPES_DIR).join(parent).join(name);
            let path = root.join(RECIPES_DIR).join(parent).join(name);
            definitions
                .entry(shown)
                .or_insert_with(|| std::fs::read(path).map_err(|e| e.to_string()));
        }
    }
    definitions
}

/// Reads every stack file in `stacks/`; a missing `stacks/` is an error.
fn read_stacks(root: &Path) -> Listing<raw::Stack> {
    let dir = root.join(STACKS_DIR);
    let mut problems = Vec::new();
    let paths = match yaml_files(root, &dir, false, &mut problems) {
        Ok(paths) => paths,
        Err(e) => {
            problems.push(SpecError::file(
                STACKS_DIR,
                format!(
                    "cannot list the stacks directory ({e}); an empty stacks/ directory means \
                     \"run nothing\", a missing one is an error"
                ),
            ));
            Vec::new()
        }
    };
    let files = paths
        .into_iter()
        .map(|path| {
            let relative = PathBuf::from(path.file_name().expect("a listed file"));
            let shown = Path::new(STACKS_DIR).join(&relative);
            YamlFile {
                parsed: read_stack(&path, &shown),
                relative,
            }
        })
        .collect();
    Listing { problems, files }
}

/// Lists the `*.yaml` files under `dir` in sorted order, descending into subdirectories if
/// `recursive` (the recipes dir); otherwise (the stacks dir) anything but a `<name>.yaml` file
/// is reported. Names starting with `.` (`.gitkeep`, editor swap files) are ignored. A `.yml`
/// file, a link that leads outside `dir`, a broken link and a symlink loop are reported, not
/// skipped or followed: each would make the desired state differ from what the reviewer read.
fn yaml_files(
    root: &Path,
    dir: &Path,
    recursive: bool,
    errors: &mut Vec<SpecError>,
) -> std::io::Result<Vec<PathBuf>> {
    let base = dir.canonicalize()?;
    let mut walk = Walk {
        root,
        shown_dir: dir.strip_prefix(root).unwrap_or(dir).to_path_buf(),
        recursive,
        errors,
        files: Vec::new(),
        loops: BTreeSet::new(),
    };
    walk.dir(dir, &mut vec![base])?;
    let mut files = walk.files;
    files.sort();
    Ok(files)
}

/// One listing of `recipes/` or `stacks/`.
struct Walk<'a> {
    root: &'a Path,
    /// The listed directory as shown in errors, e.g. `stacks`.
    shown_dir: PathBuf,
    recursive: bool,
    errors: &'a mut Vec<SpecError>,
    files: Vec<PathBuf>,
    /// Symlink loops already reported, by the link's real location.
    loops: BTreeSet<PathBuf>,
}

impl Walk<'_> {
    /// Lists `current`; `chain` holds the real paths of the directories walked through to reach
    /// it, the listed directory first and `current` last.
    fn dir(&mut self, current: &Path, chain: &mut Vec<PathBuf>) -> std::io::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(current)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            let shown = path.strip_prefix(self.root).unwrap_or(&path).to_path_buf();
            let is_link = entry.file_type()?.is_symlink();
            let real = match path.canonicalize() {
                Ok(real) => real,
                Err(_) if is_link && symlink_chain_loops(&path) => {
                    self.report_loop(&path, shown, "following it leads back to itself");
                    continue;
                }
                Err(e) if is_link && e.kind() == std::io::ErrorKind::NotFound => {
                    self.error(shown, "is a broken link: what it points to does not exist");
                    continue;
                }
                Err(e) => {
                    self.error(shown, format!("cannot be read: {e}"));
                    continue;
                }
            };
            if !real.starts_with(&chain[0]) {
                let message = format!("is a link that leads outside {}/", self.shown_dir.display());
                self.error(shown, message);
            } else if real.is_dir() {
                let physical_parent = path.parent().and_then(|p| p.canonicalize().ok());
                let loops = chain.contains(&real)
                    || physical_parent.is_some_and(|parent| parent.starts_with(&real));
                if is_link && loops {
                    self.report_loop(&path, shown, "it leads back to a directory that holds it");
                } else if self.recursive {
                    chain.push(real);
                    self.dir(&path, chain)?;
                    chain.pop();
                } else {
                    let message = format!(
                        "is a directory; {}/ holds only `<name>.yaml` files and stackctl does not \
                         read subdirectories, so move its stacks up into {}/",
                        self.shown_dir.display(),
                        self.shown_dir.display()
                    );
                    self.error(shown, message);
                }
            } else if path.extension().is_some_and(|e| e == "yml") {
                self.error(
                    shown,
                    "stackctl reads only `.yaml` files; rename it to end in `.yaml`",
                );
            } else if path.extension().is_some_and(|e| e == "yaml") {
                self.files.push(path);
            } else if !self.recursive {
                let message = format!(
                    "is not a stack file; {}/ holds only `<name>.yaml` files (names starting \
                     with `.` are ignored)",
                    self.shown_dir.display()
                );
                self.error(shown, message);
            }
        }
        Ok(())
    }

    fn error(&mut self, shown: PathBuf, message: impl Into<String>) {
        self.errors.push(SpecError::file(shown, message));
    }

    /// Reports a symlink loop once, however many paths lead to the link.
    fn report_loop(&mut self, link: &Path, shown: PathBuf, why: &str) {
        let real = match (
            link.parent().and_then(|p| p.canonicalize().ok()),
            link.file_name(),
        ) {
            (Some(parent), Some(name)) => parent.join(name),
            _ => link.to_path_buf(),
        };
        // Named where the link really is, not by the path of links that led to it.
        let shown = match self.root.canonicalize() {
            Ok(root) => real.strip_prefix(root).map_or(shown, Path::to_path_buf),
            Err(_) => shown,
        };
        if self.loops.insert(real) {
            self.error(shown, format!("is a symlink loop ({why}); remove it"));
        }
    }
}

/// Returns whether following the link at `path`, link after link, comes back to a link
/// already followed (`a -> b`, `b -> a`).
fn symlink_chain_loops(path: &Path) -> bool {
    let mut seen = BTreeSet::new();
    let mut current = path.to_path_buf();
    for _ in 0..64 {
        let Ok(target) = std::fs::read_link(&current) else {
            return false;
        };
        let (Some(parent), Some(name)) = (
            current.parent().and_then(|p| p.canonicalize().ok()),
            current.file_name(),
        ) else {
            return false;
        };
        if !seen.insert(parent.join(name)) {
            return true;
        }
        current = parent.join(target);
    }
    true
}

/// Reads one stack file. An empty one is an error, never "run nothing": a file truncated by a
/// bad merge must not destroy the stack's services.
fn read_stack(path: &Path, shown: &Path) -> Result<raw::Stack, SpecError> {
    const NOTHING: &str = "a stack that should run nothing says so with `services: {}`";
    let text = read_text(path, shown)?;
    if yaml::is_empty_document(&text) {
        return Err(SpecError::file(
            shown,
            format!("the file is empty (or holds only comments); {NOTHING}"),
        ));
    }
    yaml::parse(&text, shown).map_err(|mut e| {
        if e.message == "missing field `services`" {
            e.message = format!("{}; {NOTHING}", e.message);
        }
        e
    })
}

/// Reads and parses one YAML file. `shown` is the path printed in errors (relative to the repo).
fn read_file<T: DeserializeOwned>(path: &Path, shown: &Path) -> Result<T, SpecError> {
    let text = read_text(path, shown)?;
    yaml::parse(&text, shown)
}

/// Reads a file as UTF-8 text, refusing files over [`yaml::MAX_FILE_BYTES`].
fn read_text(path: &Path, shown: &Path) -> Result<String, SpecError> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .map_err(|e| SpecError::file(shown, format!("cannot read: {e}")))?;
    let mut bytes = Vec::new();
    file.take(yaml::MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| SpecError::file(shown, format!("cannot read: {e}")))?;
    if bytes.len() as u64 > yaml::MAX_FILE_BYTES {
        return Err(SpecError::file(
            shown,
            format!(
                "file is larger than the {} KiB limit",
                yaml::MAX_FILE_BYTES / 1024
            ),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
        let column = valid.iter().rev().take_while(|&&b| b != b'\n').count() as u64 + 1;
        SpecError {
            file: shown.into(),
            position: Some((line, column)),
            field: None,
            message: "file is not valid UTF-8".into(),
        }
    })
}
