//! The CLI adapter: `squeue`, `sbatch`, `scancel` and `scontrol` from `PATH`, configured by the
//! environment (`SLURM_CONF`) like any other Slurm client.

use super::{Backend, SlurmError};
use crate::live::JobRecord;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The squeue output format: one `|`-separated line per job or array task. A field with a
/// suffix and no width prints in full. The comment goes last, so a stray `|` in a foreign
/// job's comment cannot shift the other fields.
const SQUEUE_FORMAT: &str =
    "JobID:|,ArrayJobID:|,ArrayTaskID:|,State:|,Reason:|,NodeList:|,Name:|,Comment:|";

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
    fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, SlurmError> {
        let command = std::iter::once(program)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        tracing::debug!(%command, "running");
        let mut child = Command::new(program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| SlurmError::Spawn {
                program: program.to_owned(),
                source,
            })?;
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin is piped");
            // A write error means the child exited early; its status and stderr say why.
            let _ = pipe.write_all(input.as_bytes());
        }
        // Read both pipes on threads so a full pipe can never stall the child.
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let out = std::thread::spawn(move || {
            let mut buf = Vec::new();
            stdout.read_to_end(&mut buf).map(|_| buf)
        });
        let err = std::thread::spawn(move || {
            let mut buf = String::new();
            let _ = stderr.read_to_string(&mut buf);
            buf
        });
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().map_err(|source| SlurmError::Spawn {
                program: program.to_owned(),
                source,
            })? {
                break status;
            }
            if started.elapsed() > self.timeout {
                let _ = child.kill();
                let _ = child.wait();
                return Err(SlurmError::Timeout {
                    command,
                    seconds: self.timeout.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let stdout = out.join().expect("reader thread").unwrap_or_default();
        let stderr = err.join().expect("reader thread");
        if !status.success() {
            let message = if stderr.trim().is_empty() {
                status.to_string()
            } else {
                stderr.trim().to_owned()
            };
            return Err(SlurmError::Failed { command, message });
        }
        String::from_utf8(stdout).map_err(|_| SlurmError::Parse {
            command,
            message: "output is not UTF-8".into(),
        })
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
        output
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                parse_squeue_line(line).ok_or_else(|| SlurmError::Parse {
                    command: "squeue".into(),
                    message: format!("cannot parse line {line:?}"),
                })
            })
            .collect()
    }

    fn submit(&self, script: &str) -> Result<String, SlurmError> {
        let output = self.run("sbatch", &["--parsable"], Some(script))?;
        // `--parsable` prints `jobid[;cluster]`.
        let id = output.trim().split(';').next().unwrap_or_default();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
            return Err(SlurmError::Parse {
                command: "sbatch --parsable".into(),
                message: format!("no job id in {output:?}"),
            });
        }
        Ok(id.to_owned())
    }

    fn cancel(&self, job_ids: &[String]) -> Result<(), SlurmError> {
        // Bounded batches keep the command line short; each call names jobs by id only.
        for chunk in job_ids.chunks(500) {
            let args: Vec<&str> = chunk.iter().map(String::as_str).collect();
            self.run("scancel", &args, None)?;
        }
        Ok(())
    }

    fn batch_script(&self, job_id: &str) -> Result<String, SlurmError> {
        self.run("scontrol", &["write", "batch_script", job_id, "-"], None)
    }
}

/// Parses one line of [`SQUEUE_FORMAT`] output.
fn parse_squeue_line(line: &str) -> Option<JobRecord> {
    let mut fields = line.splitn(8, '|');
    let mut next = || fields.next().map(str::trim);
    let job_id = next()?;
    let array_job_id: u64 = next()?.parse().ok()?;
    let array_task_id: Option<u32> = next()?.parse().ok();
    // JobID is the task's own id, and the last task shares the array's id: cancelling that
    // id would cancel the whole array. An array task is always named `<array>_<task>`.
    let id = match array_task_id {
        Some(task) => format!("{array_job_id}_{task}"),
        None => job_id.to_owned(),
    };
    let state = next()?.to_owned();
    let reason = next()?.to_owned();
    let nodes = next()?.to_owned();
    let name = next()?.to_owned();
    let comment = next()?;
    let comment = comment.strip_suffix('|').unwrap_or(comment).to_owned();
    Some(JobRecord {
        id,
        array_job_id,
        array_task_id,
        name,
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
        let task =
            parse_squeue_line("12_3|12|3|RUNNING|None|node1|s.v|stackctl/v1;owner=a|").unwrap();
        assert_eq!(
            (task.id.as_str(), task.array_job_id, task.array_task_id),
            ("12_3", 12, Some(3))
        );
        assert_eq!(task.comment, "stackctl/v1;owner=a");
        let plain = parse_squeue_line("40|40|N/A|PENDING|Resources||x|a|b|c|").unwrap();
        assert_eq!(plain.array_task_id, None);
        assert_eq!(plain.comment, "a|b|c");
    }
}
