//! Where a job's output went, as Slurm recorded it when the job was submitted: `stackctl logs`
//! reads these paths rather than recomputing them from today's `log_dir`, so a job keeps its
//! log after `log_dir` changes. Pure.

use super::JobId;
use std::path::{Path, PathBuf};

/// A job's output settings as Slurm lists them: the `--output`/`--error` patterns (unexpanded,
/// as squeue and slurmrestd give them), its working directory and its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOutput {
    /// The stdout pattern (`/l/s.web-%A_%a.out`).
    pub stdout: String,
    /// The stderr pattern; empty when stderr goes with stdout.
    pub stderr: String,
    /// The job's working directory.
    pub work_dir: String,
    /// The job name (`stack.service`).
    pub name: String,
}

impl JobOutput {
    /// The stdout and stderr files of the task `id`, or `None` when they cannot be told (a
    /// pattern with a field this cannot expand, or output Slurm sends nowhere without a
    /// working directory to find the job's own files in).
    ///
    /// A job whose Slurm output goes to `/dev/null` and that has a working directory logs
    /// itself there (slurmrestd's jobs, see `slurm::rest::wire::self_logging`), under the
    /// usual names `<name>-<array>_<index>.out|.err`.
    pub fn paths(&self, id: &JobId) -> Option<(PathBuf, PathBuf)> {
        let dir = Path::new(&self.work_dir);
        if self.stdout == "/dev/null" {
            if !dir.is_absolute() {
                return None;
            }
            let stem = format!("{}-{id}", self.name);
            return Some((
                dir.join(format!("{stem}.out")),
                dir.join(format!("{stem}.err")),
            ));
        }
        let expand = |pattern: &str| {
            let path = PathBuf::from(expand(pattern, id, &self.name)?);
            Some(if path.is_absolute() {
                path
            } else {
                dir.join(path)
            })
        };
        let out = expand(&self.stdout)?;
        let err = if self.stderr.is_empty() {
            out.clone()
        } else {
            expand(&self.stderr)?
        };
        Some((out, err))
    }
}

/// Expands Slurm's `%A`, `%a`, `%x` and `%%` for the task `id`; `None` for any other field
/// (`%j`, `%N`, `%u`…: not known from the id alone).
fn expand(pattern: &str, id: &JobId, name: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            '%' => out.push('%'),
            'A' => out.push_str(&id.array.to_string()),
            'a' => out.push_str(&id.task?.to_string()),
            'x' => out.push_str(name),
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(stdout: &str, stderr: &str) -> JobOutput {
        JobOutput {
            stdout: stdout.into(),
            stderr: stderr.into(),
            work_dir: "/w".into(),
            name: "s.app".into(),
        }
    }

    const TASK: JobId = JobId {
        array: 77,
        task: Some(3),
    };

    #[test]
    fn patterns_expand_for_the_task() {
        let (out, err) = output("/old/s.app-%A_%a.out", "/old/50%%/%x-%A_%a.err")
            .paths(&TASK)
            .unwrap();
        assert_eq!(out, Path::new("/old/s.app-77_3.out"));
        assert_eq!(err, Path::new("/old/50%/s.app-77_3.err"));
        // Relative to the working directory; stderr with stdout when not set apart.
        let (out, err) = output("logs/%A_%a.out", "").paths(&TASK).unwrap();
        assert_eq!(
            (out.as_path(), err.as_path()),
            (Path::new("/w/logs/77_3.out"), Path::new("/w/logs/77_3.out"))
        );
    }

    #[test]
    fn fields_not_known_from_the_id_give_none() {
        assert_eq!(output("/l/%j.out", "").paths(&TASK), None);
        assert_eq!(output("/l/%N.out", "").paths(&TASK), None);
        assert_eq!(output("/l/100%", "").paths(&TASK), None);
    }

    #[test]
    fn a_job_logging_itself_is_found_in_its_working_directory() {
        let (out, err) = output("/dev/null", "/dev/null").paths(&TASK).unwrap();
        assert_eq!(out, Path::new("/w/s.app-77_3.out"));
        assert_eq!(err, Path::new("/w/s.app-77_3.err"));
        let mut nowhere = output("/dev/null", "/dev/null");
        nowhere.work_dir = String::new();
        assert_eq!(nowhere.paths(&TASK), None);
    }
}
