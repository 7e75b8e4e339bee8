//! Secrets: named values a service receives in its environment without the value ever being
//! in git in clear, in a plan, in a log line, or in anything Slurm stores.
//!
//! This module owns where a secret comes from ([`Source`]), reading it on the machine that
//! applies ([`resolve`]), the age files kept in the repo ([`encrypt`], [`decrypt`]) and the
//! [`fingerprint`] that stands for a value in spec hashes. A [`Value`] never prints itself:
//! its `Debug` says `(sensitive)`, and the only way to the bytes is [`Value::expose`], which
//! the job delivery alone calls.

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// What a secret is shown as wherever stackctl writes.
pub const REDACTED: &str = "(sensitive)";

/// Where a secret's value comes from (`secrets:` in `stackctl.yaml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An environment variable of the applying machine (`{env: HF_TOKEN}`).
    Env(String),
    /// A file on the applying machine (`{file: ~/.config/stackctl/db_password}`), as written.
    File(String),
    /// An age-encrypted file in the repo (`{age: secrets/api_key.age}`), relative to the repo.
    Age(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Env(var) => write!(f, "environment variable {var}"),
            Source::File(path) => write!(f, "file {path}"),
            Source::Age(path) => write!(f, "age file {}", path.display()),
        }
    }
}

/// The age settings of a repo (`age:` in `stackctl.yaml`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgeSettings {
    /// Who `secret set` encrypts to (`age1…` public keys); any one of them can decrypt.
    pub recipients: Vec<String>,
    /// The identity (private key) file that decrypts, as written; `STACKCTL_AGE_IDENTITY`
    /// (a path) takes precedence.
    pub identity_file: Option<String>,
}

/// The environment variable naming an age identity file, before `age.identity_file`.
pub const IDENTITY_ENV: &str = "STACKCTL_AGE_IDENTITY";

/// A secret's value. Prints as `(sensitive)`.
#[derive(Clone, PartialEq, Eq)]
pub struct Value(String);

impl Value {
    /// Wraps a value read from a source.
    pub fn new(value: String) -> Value {
        Value(value)
    }

    /// The value itself: only for the file the job reads it from.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Why a secret could not be read, named by the secret and its source. Never holds a value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The environment variable is not set (or not UTF-8).
    #[error("secret {name}: environment variable {var} is not set on this machine")]
    MissingEnv {
        /// The secret.
        name: String,
        /// The variable.
        var: String,
    },
    /// The file could not be read.
    #[error("secret {name}: cannot read {source_desc}: {cause}")]
    Read {
        /// The secret.
        name: String,
        /// The source, e.g. `file /home/a/token`.
        source_desc: String,
        /// What the file system said.
        cause: String,
    },
    /// No identity to decrypt an age file with, or one that cannot be read.
    #[error("secret {name}: {message}")]
    Identity {
        /// The secret.
        name: String,
        /// What is missing.
        message: String,
    },
    /// The age file is not for any identity given, or is damaged.
    #[error("secret {name}: cannot decrypt {path} with the identity {identity}: {cause}")]
    Decrypt {
        /// The secret.
        name: String,
        /// The age file.
        path: String,
        /// The identity file tried.
        identity: String,
        /// What age said.
        cause: String,
    },
    /// A value to encrypt, or recipients, were refused.
    #[error("{0}")]
    Encrypt(String),
}

/// Reads secret `name` from `source`. `repo` is the checkout (for age files), `home` the home
/// directory for `~`, `env` looks up the applying machine's environment.
pub fn resolve(
    name: &str,
    source: &Source,
    age: &AgeSettings,
    repo: &Path,
    home: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Value, Error> {
    match source {
        Source::Env(var) => env(var).map(Value::new).ok_or_else(|| Error::MissingEnv {
            name: name.to_owned(),
            var: var.clone(),
        }),
        Source::File(path) => {
            let full = crate::paths::expand_home(path, home);
            let text = std::fs::read_to_string(&full).map_err(|e| Error::Read {
                name: name.to_owned(),
                source_desc: format!("file {}", full.display()),
                cause: e.to_string(),
            })?;
            // A file written by `echo` or an editor ends in one newline that is not the value.
            let text = text.strip_suffix('\n').unwrap_or(&text);
            let text = text.strip_suffix('\r').unwrap_or(text);
            Ok(Value::new(text.to_owned()))
        }
        Source::Age(path) => {
            let full = repo.join(path);
            let data = std::fs::read(&full).map_err(|e| Error::Read {
                name: name.to_owned(),
                source_desc: format!("age file {}", path.display()),
                cause: e.to_string(),
            })?;
            let identity = identity_path(age, home, env).ok_or_else(|| Error::Identity {
                name: name.to_owned(),
                message: format!(
                    "no age identity to decrypt {} with: set {IDENTITY_ENV} to an identity \
                     file, or `age.identity_file` in stackctl.yaml",
                    path.display()
                ),
            })?;
            let identities = read_identities(&identity).map_err(|message| Error::Identity {
                name: name.to_owned(),
                message,
            })?;
            let plain = decrypt(&data, &identities).map_err(|cause| Error::Decrypt {
                name: name.to_owned(),
                path: path.display().to_string(),
                identity: identity.display().to_string(),
                cause,
            })?;
            String::from_utf8(plain)
                .map(Value::new)
                .map_err(|_| Error::Decrypt {
                    name: name.to_owned(),
                    path: path.display().to_string(),
                    identity: identity.display().to_string(),
                    cause: "the value is not UTF-8 text".to_owned(),
                })
        }
    }
}

/// The identity file to decrypt with: `STACKCTL_AGE_IDENTITY`, else `age.identity_file`.
pub fn identity_path(
    age: &AgeSettings,
    home: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<PathBuf> {
    env(IDENTITY_ENV)
        .filter(|p| !p.is_empty())
        .or_else(|| age.identity_file.clone())
        .map(|p| crate::paths::expand_home(&p, home))
}

/// Reads the identities (private keys) of an age identity file.
pub fn read_identities(path: &Path) -> Result<Vec<Box<dyn age::Identity>>, String> {
    let file = age::IdentityFile::from_file(path.display().to_string())
        .map_err(|e| format!("cannot read the age identity file {}: {e}", path.display()))?;
    let identities = file.into_identities().map_err(|e| {
        format!(
            "the age identity file {} is not usable: {e}",
            path.display()
        )
    })?;
    if identities.is_empty() {
        return Err(format!(
            "the age identity file {} holds no identity",
            path.display()
        ));
    }
    Ok(identities)
}

/// Parses `age1…` recipients, naming the first one that is not a valid X25519 public key.
pub fn parse_recipients(recipients: &[String]) -> Result<Vec<age::x25519::Recipient>, String> {
    recipients
        .iter()
        .map(|r| {
            r.parse::<age::x25519::Recipient>()
                .map_err(|e| format!("`{r}` is not an age recipient (age1…): {e}"))
        })
        .collect()
}

/// Encrypts `plain` to every recipient, in age's ASCII-armored format (what `age -a -r`
/// writes; `age -d` reads it).
pub fn encrypt(plain: &[u8], recipients: &[String]) -> Result<String, Error> {
    let parsed = parse_recipients(recipients).map_err(Error::Encrypt)?;
    if parsed.is_empty() {
        return Err(Error::Encrypt(
            "no age recipients: list them under `age.recipients` in stackctl.yaml".to_owned(),
        ));
    }
    let encryptor =
        age::Encryptor::with_recipients(parsed.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| Error::Encrypt(e.to_string()))?;
    let mut out = Vec::new();
    let io = |e: std::io::Error| Error::Encrypt(e.to_string());
    let armor = age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor)
        .map_err(io)?;
    let mut writer = encryptor.wrap_output(armor).map_err(io)?;
    writer.write_all(plain).map_err(io)?;
    writer
        .finish()
        .and_then(|armor| armor.finish())
        .map_err(io)?;
    String::from_utf8(out).map_err(|e| Error::Encrypt(e.to_string()))
}

/// Decrypts an age file, binary or armored, with any of `identities`.
pub fn decrypt(data: &[u8], identities: &[Box<dyn age::Identity>]) -> Result<Vec<u8>, String> {
    let reader = age::armor::ArmoredReader::new(data);
    let decryptor = age::Decryptor::new(reader).map_err(|e| e.to_string())?;
    let mut plain = Vec::new();
    decryptor
        .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(|e| e.to_string())?
        .read_to_end(&mut plain)
        .map_err(|e| e.to_string())?;
    Ok(plain)
}

/// The name of an owner's directory under `secrets_dir`: `owner-` and 16 hex digits of the
/// owner's SHA-256, so two owners never share (or clean up) each other's files.
pub fn owner_dir_name(owner: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(owner.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("owner-{hex}")
}

/// [`crate::slurm::Backend::sync_secrets`] on this machine's file system: the directory is
/// made (mode 0700), each file written to a temporary name with mode 0600 and renamed into
/// place (a job never reads half a file), and every other `.env` file not in `keep` removed.
pub fn sync_local(
    dir: &Path,
    write: &std::collections::BTreeMap<String, String>,
    keep: &std::collections::BTreeSet<String>,
) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let at = |e: std::io::Error| format!("{}: {e}", dir.display());
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(at)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(at)?;
    for (name, text) in write {
        let path = dir.join(name);
        let partial = dir.join(format!(".{name}.partial"));
        let _ = std::fs::remove_file(&partial);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)
            .map_err(at)?;
        file.write_all(text.as_bytes()).map_err(at)?;
        file.sync_all().map_err(at)?;
        std::fs::rename(&partial, &path).map_err(at)?;
    }
    for entry in std::fs::read_dir(dir).map_err(at)? {
        let name = entry.map_err(at)?.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".env") && !write.contains_key(&*name) && !keep.contains(&*name) {
            std::fs::remove_file(dir.join(&*name)).map_err(at)?;
        }
    }
    Ok(())
}

/// The shell script that does [`sync_local`] on a login node over SSH: `$1` the directory,
/// `$2` the file to write (its text on stdin, or none), then the names to keep. `umask 077`
/// makes both the directory and the file private.
pub const SYNC_SCRIPT: &str = r#"set -eu
umask 077
dir=$1; name=$2; shift 2
mkdir -p -- "$dir"; chmod 700 -- "$dir"
if [ -n "$name" ]; then cat > "$dir/.$name.partial"; mv -f -- "$dir/.$name.partial" "$dir/$name"; fi
for f in "$dir"/*.env; do
  [ -e "$f" ] || continue
  b=${f##*/}; k=0
  [ "$b" = "$name" ] && k=1
  for n in "$@"; do [ "$b" = "$n" ] && k=1; done
  [ "$k" = 1 ] || rm -f -- "$f"
done
"#;

/// PBKDF2 rounds of a fingerprint: each guess at a value costs an attacker as much.
const FINGERPRINT_ROUNDS: u32 = 10_000;

/// Returns 16 hex digits standing for `value` of secret `name` under `owner`: the same on every
/// machine that reads the same value, different when the value changes, and costly to invert
/// (PBKDF2-HMAC-SHA256 salted with the owner and the name), since it reaches job markers
/// through the spec hash.
pub fn fingerprint(owner: &str, name: &str, value: &Value) -> String {
    let salt = format!("stackctl/secret/v1\0{owner}\0{name}");
    let mut out = [0u8; 8];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(
        value.expose().as_bytes(),
        salt.as_bytes(),
        FINGERPRINT_ROUNDS,
        &mut out,
    );
    out.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn a_value_never_prints_itself() {
        let v = Value::new("hunter2".into());
        assert_eq!(format!("{v:?}"), REDACTED);
        assert_eq!(format!("{:?}", Some(&v)), "Some((sensitive))");
    }

    #[test]
    fn fingerprints_follow_the_value_owner_and_name() {
        let a = Value::new("one".into());
        let b = Value::new("two".into());
        let fa = fingerprint("o", "db", &a);
        assert_eq!(fa.len(), 16);
        assert_eq!(fa, fingerprint("o", "db", &a.clone()));
        assert_ne!(fa, fingerprint("o", "db", &b));
        assert_ne!(fa, fingerprint("o2", "db", &a));
        assert_ne!(fa, fingerprint("o", "db2", &a));
        assert!(!fa.contains("one"));
    }

    #[test]
    fn an_encrypted_value_decrypts_with_any_recipient_and_not_with_others() {
        let one = age::x25519::Identity::generate();
        let two = age::x25519::Identity::generate();
        let stranger = age::x25519::Identity::generate();
        let recipients = vec![one.to_public().to_string(), two.to_public().to_string()];
        let armored = encrypt(b"s3cret\nline", &recipients).unwrap();
        assert!(armored.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
        assert!(!armored.contains("s3cret"));
        for id in [one, two] {
            let ids: Vec<Box<dyn age::Identity>> = vec![Box::new(id)];
            assert_eq!(decrypt(armored.as_bytes(), &ids).unwrap(), b"s3cret\nline");
        }
        let ids: Vec<Box<dyn age::Identity>> = vec![Box::new(stranger)];
        assert!(decrypt(armored.as_bytes(), &ids).is_err());
    }

    #[test]
    fn a_bad_recipient_is_named() {
        let err = encrypt(b"x", &["age1nope".to_owned()]).unwrap_err();
        assert!(err.to_string().contains("`age1nope`"), "{err}");
        assert!(encrypt(b"x", &[]).is_err());
    }

    #[test]
    fn each_source_resolves_or_names_the_secret_and_source() {
        let dir = tempfile::tempdir().unwrap();
        let env = |k: &str| (k == "TOKEN").then(|| "from-env".to_owned());
        let age = AgeSettings::default();
        let v = resolve(
            "t",
            &Source::Env("TOKEN".into()),
            &age,
            dir.path(),
            None,
            &env,
        )
        .unwrap();
        assert_eq!(v.expose(), "from-env");
        let err = resolve(
            "t",
            &Source::Env("NOPE".into()),
            &age,
            dir.path(),
            None,
            &env,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("secret t") && err.contains("NOPE"), "{err}");

        let file = dir.path().join("pw");
        std::fs::write(&file, "pa ss\n").unwrap();
        let src = Source::File(file.display().to_string());
        let v = resolve("pw", &src, &age, dir.path(), None, &no_env).unwrap();
        assert_eq!(v.expose(), "pa ss");
        let src = Source::File("~/missing".into());
        let err = resolve(
            "pw",
            &src,
            &age,
            dir.path(),
            Some("/nonexistent-home"),
            &no_env,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("secret pw") && err.contains("/nonexistent-home/missing"),
            "{err}"
        );
    }

    #[test]
    fn an_age_secret_needs_the_right_identity() {
        let dir = tempfile::tempdir().unwrap();
        let me = age::x25519::Identity::generate();
        let other = age::x25519::Identity::generate();
        let armored = encrypt(b"k3y", &[me.to_public().to_string()]).unwrap();
        std::fs::create_dir(dir.path().join("secrets")).unwrap();
        std::fs::write(dir.path().join("secrets/k.age"), armored).unwrap();
        use age::secrecy::ExposeSecret;
        let mine = dir.path().join("me.key");
        std::fs::write(&mine, format!("{}\n", me.to_string().expose_secret())).unwrap();
        let theirs = dir.path().join("other.key");
        std::fs::write(&theirs, format!("{}\n", other.to_string().expose_secret())).unwrap();
        let src = Source::Age("secrets/k.age".into());

        let age = AgeSettings {
            recipients: vec![],
            identity_file: Some(mine.display().to_string()),
        };
        let v = resolve("k", &src, &age, dir.path(), None, &no_env).unwrap();
        assert_eq!(v.expose(), "k3y");

        // The variable wins over the setting: the wrong key is tried and named.
        let theirs_env = theirs.display().to_string();
        let env = move |k: &str| (k == IDENTITY_ENV).then(|| theirs_env.clone());
        let err = resolve("k", &src, &age, dir.path(), None, &env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("secret k") && err.contains("other.key"),
            "{err}"
        );

        let none = AgeSettings::default();
        let err = resolve("k", &src, &none, dir.path(), None, &no_env)
            .unwrap_err()
            .to_string();
        assert!(err.contains(IDENTITY_ENV), "{err}");
    }
}
