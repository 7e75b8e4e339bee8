//! The CLI adapter: `squeue`, `sbatch`, `scancel` and `scontrol` from `PATH`, configured by the
//! environment (`SLURM_CONF`) like any other Slurm client.

use super::{Backend, SlurmError};
use crate::cluster::ClusterFacts;
use crate::live::{JobId, JobRecord, compact_job_ids};
use std::io::{Read, Seek, SeekFrom, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use wait_timeout::ChildExt;

/// The squeue output format: one `|`-separated line per job or array task. A field with a
/// suffix and no width prints in full. The comment goes last, so a stray `|` in a foreign
/// job's comment cannot shift the other fields.
const SQUEUE_FORMAT: &str = "ArrayJobID:|,ArrayTaskID:|,State:|,Reason:|,NodeList:|,Comment:|";

/// Slurm reached through its command-line clients.
#[derive(Debug, Clone)]
pub struct CliBackend {
    /// Deadline for one command.
    pub timeout: Duration,
}

impl Default for CliBackend {
    fn default() -> Self {
        CliBackend {
            timeout: Duration::from_secs(60),
        }
    }
}

impl CliBackend {
    /// Runs a Slurm command, killing it after the deadline.
    ///
    /// Output goes to unnamed temporary files rather than pipes: squeue writes its listing in
    /// hundreds of small writes, and a pipe turns each into a wake-up of the reader.
    fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, SlurmError> {
        let command = std::iter::once(program)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        tracing::debug!(%command, "running");
        let spawn_error = |source| SlurmError::Spawn {
            program: program.to_owned(),
            source,
        };
        let mut stdout = tempfile::tempfile().map_err(spawn_error)?;
        let mut stderr = tempfile::tempfile().map_err(spawn_error)?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(stdout.try_clone().map_err(spawn_error)?)
            .stderr(stderr.try_clone().map_err(spawn_error)?)
            .spawn()
            .map_err(spawn_error)?;
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin is piped");
            // A write error means the child exited early; its status and stderr say why.
            let _ = pipe.write_all(input.as_bytes());
        }
        let status = match child.wait_timeout(self.timeout).map_err(spawn_error)? {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(SlurmError::Timeout {
                    command,
                    seconds: self.timeout.as_secs(),
                });
            }
        };
        let read = |file: &mut std::fs::File| -> String {
            let size = file.metadata().map_or(0, |m| m.len() as usize);
            let mut text = String::with_capacity(size);
            let _ = file
                .seek(SeekFrom::Start(0))
                .and_then(|_| file.read_to_string(&mut text));
            text
        };
        let (out, err) = (read(&mut stdout), read(&mut stderr));
        if !status.success() {
            let message = if err.trim().is_empty() {
                status.to_string()
            } else {
                err.trim().to_owned()
            };
            return Err(SlurmError::Failed { command, message });
        }
        Ok(out)
    }
}

impl Backend for CliBackend {
    fn list_jobs(&self) -> Result<Vec<JobRecord>, SlurmError> {
        // `--me`: only this user's jobs are ever ours; `-t all` keeps ended jobs (within
        // MinJobAge); `-r` prints one line per array task, pending ones included.
        let args = [
            "--me",
            "--noheader",
            "--array",
            "--states=all",
            "--Format",
            SQUEUE_FORMAT,
        ];
        let output = self.run("squeue", &args, None)?;
        // The tasks of an array share one comment: keep one copy of it.
        let mut last_comment: Arc<str> = Arc::from("");
        output
            .lines()
            .filter(|line| line.contains(crate::live::COMMENT_TAG))
            .map(|line| {
                parse_squeue_line(line, &mut last_comment).ok_or_else(|| SlurmError::Parse {
                    command: "squeue".into(),
                    message: format!("cannot parse line {line:?}"),
                })
            })
            .collect()
    }

    fn submit(&self, script: &str) -> Result<u64, SlurmError> {
        let output = self.run("sbatch", &["--parsable"], Some(script))?;
        // `--parsable` prints `jobid[;cluster]`.
        let id = output.trim().split(';').next().unwrap_or_default();
        id.parse().map_err(|_| SlurmError::Parse {
            command: "sbatch --parsable".into(),
            message: format!("no job id in {output:?}"),
        })
    }

    fn cancel(&self, job_ids: &[JobId]) -> Result<(), SlurmError> {
        // Tasks of one array go as one `A_[ranges]` argument: one request, not one per task.
        let args = compact_job_ids(job_ids);
        for chunk in args.chunks(200) {
            let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
            self.run("scancel", &chunk, None)?;
        }
        Ok(())
    }

    fn test_submit(&self, script: &str) -> Result<(), SlurmError> {
        // `--test-only` prints its verdict on stderr and submits nothing.
        self.run("sbatch", &["--test-only"], Some(script))
            .map(|_| ())
    }

    fn update_comment(&self, job_id: &JobId, comment: &str) -> Result<(), SlurmError> {
        let id = format!("JobId={job_id}");
        let comment = format!("Comment={comment}");
        self.run("scontrol", &["update", &id, &comment], None)
            .map(|_| ())
    }

    fn cluster_facts(&self) -> Result<ClusterFacts, SlurmError> {
        Err(SlurmError::Failed {
            command: "scontrol show partition".into(),
            message: "reading cluster facts is not implemented yet".into(),
        })
    }

    fn batch_script(&self, job_id: &JobId) -> Result<String, SlurmError> {
        self.run(
            "scontrol",
            &["write", "batch_script", &job_id.to_string(), "-"],
            None,
        )
    }
}

/// Parses one line of [`SQUEUE_FORMAT`] output.
fn parse_squeue_line(line: &str, last_comment: &mut Arc<str>) -> Option<JobRecord> {
    let mut fields = line.splitn(6, '|');
    let mut next = || fields.next().map(str::trim);
    // ArrayJobID is the job's own id when it is no array task. JobID is not listed: for an
    // array task it is the task's own id, and the last task shares the array's id, so
    // cancelling it would cancel the whole array. An array task is always `<array>_<task>`.
    let id = JobId {
        array: next()?.parse().ok()?,
        task: next()?.parse().ok(),
    };
    let state = next()?.to_owned();
    let reason = next()?.to_owned();
    let nodes = next()?.to_owned();
    let comment = next()?;
    let comment = comment.strip_suffix('|').unwrap_or(comment);
    if **last_comment != *comment {
        *last_comment = Arc::from(comment);
    }
    let comment = last_comment.clone();
    Some(JobRecord {
        id,
        comment,
        state,
        reason,
        nodes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_array_tasks_and_plain_jobs() {
        let task = parse_squeue_line(
            "12|3|RUNNING|None|node1|stackctl/v1;owner=a|",
            &mut Arc::from(""),
        )
        .unwrap();
        assert_eq!(task.id.to_string(), "12_3");
        assert_eq!(&*task.comment, "stackctl/v1;owner=a");
        let plain =
            parse_squeue_line("40|N/A|PENDING|Resources||a|b|c|", &mut Arc::from("")).unwrap();
        assert_eq!(
            plain.id,
            JobId {
                array: 40,
                task: None
            }
        );
        assert_eq!(&*plain.comment, "a|b|c");
    }
}
