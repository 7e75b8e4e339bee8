//! The batch script a replica gets. Pure: machine-specific paths come in through
//! [`ScriptContext`], already expanded, and never enter the spec hash.
//!
//! A spec with neither a health check nor an `auto` port gets a plain script that `exec`s the
//! service. Otherwise the script is a small bash supervisor ([`SUPERVISOR`]): it finds the
//! node's address, picks the `auto` ports, exports `PORT`, `PORT_<i>` and `PORT_<NAME>`, starts
//! the service in the background, forwards SIGTERM and SIGCONT to it, probes it, records
//! `health=`, `addr=` and `ports=` in this task's own comment when they change, and exits with
//! the service's exit code, or [`UNHEALTHY_EXIT_CODE`] after stopping a service that stayed
//! unhealthy with `on_failure: restart`. The service's own environment is exported only in the
//! service's process (and a `command` check's), so no value of it (`PATH`, `IFS`, `LD_PRELOAD`,
//! …) reaches the supervisor's tools.

use crate::desired::{
    HealthSpec, OnFailure, PortValue, Probe, ReplicaSpec, ServiceAddr, UNHEALTHY_EXIT_CODE,
};
pub use crate::job::quote;
use crate::job::{JobOptions, JobRequest};
use crate::observed::{JobId, Marker};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;

/// The script line that carries the spec, so a later plan can show what changed.
pub const SPEC_LINE_PREFIX: &str = "# stackctl-spec: ";

/// Machine-specific settings of the submitting side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptContext {
    /// Directory for job stdout/stderr (expanded, absolute).
    pub log_dir: PathBuf,
    /// Directory that relative image paths are resolved against (expanded).
    pub image_dir: PathBuf,
    /// This owner's directory of secrets files (expanded), when some service uses secrets:
    /// `<secrets_dir>/<spec hash>.env` carries a spec's secrets to its jobs.
    pub secrets_dir: Option<PathBuf>,
}

impl ScriptContext {
    /// The file that carries the secrets of the jobs running spec `hash`, if secrets are used.
    pub fn secrets_file(&self, hash: &crate::desired::SpecHash) -> Option<PathBuf> {
        self.secrets_dir
            .as_ref()
            .map(|dir| dir.join(format!("{}.env", hash.0)))
    }
}

/// The job for the replicas of `service` listed in `marker.indexes`, with the spec's
/// `endpoint_env` not yet resolved (each noted in a comment), as `stackctl render` shows it.
pub fn render(
    service: &ServiceAddr,
    spec: &ReplicaSpec,
    marker: &Marker,
    ctx: &ScriptContext,
) -> JobRequest {
    render_with_endpoints(service, spec, marker, ctx, &BTreeMap::new())
}

/// [`render`], exporting the `endpoint_env` values the plan resolved (`endpoints`). They never
/// enter the spec line: the spec holds the reference, the job gets the address.
pub fn render_with_endpoints(
    service: &ServiceAddr,
    spec: &ReplicaSpec,
    marker: &Marker,
    ctx: &ScriptContext,
    endpoints: &BTreeMap<String, String>,
) -> JobRequest {
    let res = &spec.resources;
    // `%A_%a` is `<array>_<index>`, the job id plan and status print: see [`log_paths`].
    // A `%` of the log directory itself is written `%%`, so Slurm keeps it literally.
    let log_dir = PathBuf::from(ctx.log_dir.display().to_string().replace('%', "%%"));
    let (stdout, stderr) = log_paths_named(&log_dir, service, "%A_%a");
    let options = JobOptions {
        name: service.to_string(),
        comment: marker.to_string(),
        array: Some(marker.indexes.clone()),
        nodes: Some(res.nodes),
        ntasks_per_node: Some(1),
        cpus_per_task: Some(res.cpu),
        memory: res.memory.as_ref().map(|m| m.to_string()),
        memory_per_cpu: res.memory_per_cpu.clone(),
        gres: (res.gpu > 0).then(|| match &res.gpu_type {
            Some(kind) => format!("gpu:{kind}:{}", res.gpu),
            None => format!("gpu:{}", res.gpu),
        }),
        time_limit: res.time_limit,
        partition: spec.slurm.partition.clone(),
        qos: spec.slurm.qos.clone(),
        account: spec.slurm.account.clone(),
        output: Some(stdout.display().to_string()),
        error: Some(stderr.display().to_string()),
        // The job's environment comes from this script alone, so the same commit gives the
        // same job whether it was applied from a laptop or a CI runner.
        export_none: true,
        ..JobOptions::default()
    };

    let mut s = String::from(SPEC_LINE_PREFIX);
    s.push_str(&spec.to_canonical_json());
    s.push('\n');
    s.push_str("export PATH=\"${PATH:-/usr/local/bin:/usr/bin:/bin}\"\n");
    let _ = writeln!(s, "export STACKCTL_STACK={}", quote(&service.stack));
    let _ = writeln!(s, "export STACKCTL_SERVICE={}", quote(&service.service));
    s.push_str("export STACKCTL_REPLICA=\"${SLURM_ARRAY_TASK_ID}\"\n");
    if let Some(bind) = &res.cpu_bind {
        let _ = writeln!(s, "export SLURM_CPU_BIND={}", quote(bind));
    }
    let supervised = spec.health.is_some() || spec.has_auto_ports();
    // A plain script stays exactly as it was before supervisors existed (no `PORT`
    // variables either, which a recipe's own environment may set): the service's environment
    // is exported at the top, and the service is all the script runs.
    let secrets = (!spec.secret_env.is_empty())
        .then(|| ctx.secrets_file(&marker.spec))
        .flatten();
    let secrets = secrets.as_deref();
    if !supervised {
        setup_lines(&mut s, spec);
        // A container gets its environment through the runtime's flags, never the host's;
        // its secrets are read here and handed to the runtime by name.
        if spec.container.is_none() {
            user_environment(&mut s, spec, endpoints, secrets, &[]);
        } else {
            secrets_lines(&mut s, spec, secrets);
        }
        service_lines(&mut s, spec, ctx, endpoints);
        return JobRequest { options, body: s };
    }
    // A supervisor runs its own tools (awk, hostname, flock, squeue, scontrol, timeout…): the
    // service's environment (`PATH`, `IFS`, `LD_PRELOAD`, `HOME`…, passed literally) is
    // exported only in the service's own process and a `command` health check's, never in
    // the supervisor's. The `PORT` variables stackctl sets win over the service's own.
    s.push_str("stackctl_user_env() {\n");
    let ports = port_variables(spec);
    let before = s.len();
    user_environment(&mut s, spec, endpoints, secrets, &ports);
    if s.len() == before {
        s.push_str(":\n");
    }
    s.push_str("}\n");
    supervisor_prelude(&mut s, spec);
    s.push_str("stackctl_service() {\n");
    setup_lines(&mut s, spec);
    if spec.container.is_none() {
        s.push_str("stackctl_user_env\n");
    } else {
        secrets_lines(&mut s, spec, secrets);
    }
    service_lines(&mut s, spec, ctx, endpoints);
    s.push_str("}\n");
    supervisor_main(&mut s, spec);
    JobRequest { options, body: s }
}

/// Writes the `export` lines of the service's own environment and its resolved `endpoint_env`
/// (a comment for one not resolved yet), leaving out the names in `skip`, then reads its
/// secrets from `secrets` (a file of `export` lines only the job's user can read, written by
/// apply): the values are never in the script, which Slurm keeps.
fn user_environment(
    s: &mut String,
    spec: &ReplicaSpec,
    endpoints: &BTreeMap<String, String>,
    secrets: Option<&std::path::Path>,
    skip: &[String],
) {
    for (key, value) in &spec.environment {
        if !skip.contains(key) {
            let _ = writeln!(s, "export {key}={}", quote(value));
        }
    }
    for (key, reference) in &spec.endpoint_env {
        match endpoints.get(key) {
            Some(value) => {
                let _ = writeln!(s, "export {key}={}", quote(value));
            }
            None => {
                let _ = writeln!(
                    s,
                    "# {key}: set at submit time from a ready replica of {}",
                    reference.service
                );
            }
        }
    }
    secrets_lines(s, spec, secrets);
}

/// Writes the line that reads the spec's secrets from `secrets` (a file of `export` lines only
/// the job's user can read, written by apply), or a comment where the file is not known yet
/// (`stackctl render` without secrets). Nothing for a spec without secrets.
fn secrets_lines(s: &mut String, spec: &ReplicaSpec, secrets: Option<&std::path::Path>) {
    if spec.secret_env.is_empty() {
        return;
    }
    let names: Vec<String> = spec
        .secret_env
        .iter()
        .map(|(key, r)| format!("{key} (secret {})", r.secret))
        .collect();
    let _ = writeln!(s, "# secrets: {}", names.join(", "));
    match secrets {
        Some(file) => {
            let file = quote(&file.display().to_string());
            let _ = writeln!(
                s,
                ". {file} || {{ echo \"stackctl: cannot read the secrets file \"{file} >&2; exit 78; }}"
            );
        }
        None => s.push_str("# (read at submit time from a file only the job's user can read)\n"),
    }
}

/// The text of the secrets file of a spec: one `export NAME='value'` line per variable, in
/// name order, for the batch script to read with `.`.
pub fn secrets_file_text(
    spec: &ReplicaSpec,
    values: &BTreeMap<String, crate::secret::Value>,
) -> String {
    let mut text = String::new();
    for (key, reference) in &spec.secret_env {
        if let Some(value) = values.get(&reference.secret) {
            let _ = writeln!(text, "export {key}={}", quote(value.expose()));
        }
    }
    text
}

/// The names of the `PORT` variables a supervised script exports ([`port_exports`]).
fn port_variables(spec: &ReplicaSpec) -> Vec<String> {
    let mut names = Vec::new();
    for (i, port) in spec.ports.iter().enumerate() {
        names.push(format!("PORT_{i}"));
        if let Some(name) = &port.name {
            names.push(format!("PORT_{}", name.to_ascii_uppercase()));
        }
    }
    if !spec.ports.is_empty() {
        names.push("PORT".to_owned());
    }
    names
}

/// The job of the successor of a failed replica (one index): [`render`]'s, plus
/// `--begin=now+<wait>` when the backoff has not passed yet (the job waits in the queue with
/// reason `BeginTime`) and `--exclude=<nodes>` to keep it off the node it failed on.
pub fn render_successor(
    service: &ServiceAddr,
    spec: &ReplicaSpec,
    marker: &Marker,
    ctx: &ScriptContext,
    wait: u64,
    exclude: Option<&str>,
    endpoints: &BTreeMap<String, String>,
) -> JobRequest {
    let mut job = render_with_endpoints(service, spec, marker, ctx, endpoints);
    job.options.begin = (wait > 0).then(|| format!("now+{wait}"));
    job.options.exclude = exclude.map(str::to_owned);
    job
}

/// Writes the recipe's `setup:` lines (run before the runtime, with the job's environment).
fn setup_lines(s: &mut String, spec: &ReplicaSpec) {
    for line in &spec.setup {
        s.push_str(line.trim_end());
        s.push('\n');
    }
}

/// The image a container runtime opens: a built image under `image_dir` (named by its
/// definition's hash), or the image as written (under `image_dir` when relative).
pub fn container_image(spec: &ReplicaSpec, ctx: &ScriptContext) -> Option<String> {
    use crate::container::{Runtime, built_image_name};
    let image = spec.image.as_deref()?;
    let container = spec.container.as_ref()?;
    Some(match (&container.build, container.runtime) {
        (Some(def), Runtime::Podman) => format!("localhost/{image}:{}", def.sha256),
        (Some(def), runtime) => ctx
            .image_dir
            .join(built_image_name(image, def, runtime))
            .display()
            .to_string(),
        (None, _) => image_path(image, ctx),
    })
}

/// The environment a container gets, in order (later names win): a default `PATH` (for
/// Charliecloud), the
/// service's `environment` and resolved `endpoint_env`, its `PORT` variables, the replica's
/// identity and Slurm's job variables, and the GPU variables when it has GPUs.
fn container_env(
    spec: &ReplicaSpec,
    endpoints: &BTreeMap<String, String>,
) -> Vec<(String, crate::container::EnvValue)> {
    use crate::container::{CONTAINER_PATH, EnvValue, GPU_VARIABLES, JOB_VARIABLES};
    let supervised = spec.health.is_some() || spec.has_auto_ports();
    let ports = if supervised {
        port_variables(spec)
    } else {
        Vec::new()
    };
    // ch-run starts from an empty environment: it gets Debian's PATH unless the service sets
    // one. Apptainer and Podman keep the image's own PATH.
    let mut env = Vec::new();
    if spec
        .container
        .as_ref()
        .is_some_and(|c| c.runtime == crate::container::Runtime::Charliecloud)
    {
        env.push((
            "PATH".to_owned(),
            EnvValue::Literal(CONTAINER_PATH.to_owned()),
        ));
    }
    for (key, value) in &spec.environment {
        if !ports.contains(key) {
            env.push((key.clone(), EnvValue::Literal(value.clone())));
        }
    }
    for key in spec.endpoint_env.keys() {
        if let Some(value) = endpoints.get(key) {
            env.push((key.clone(), EnvValue::Literal(value.clone())));
        }
    }
    // Secrets were read from their file in the script; the runtime gets them without their
    // values on any command line.
    env.extend(
        spec.secret_env
            .keys()
            .map(|key| (key.clone(), EnvValue::Secret)),
    );
    let mut from_job: Vec<String> = ports;
    from_job.extend(JOB_VARIABLES.iter().map(|v| v.to_string()));
    if spec.resources.cpu_bind.is_some() {
        from_job.push("SLURM_CPU_BIND".into());
    }
    if spec.resources.gpu > 0 {
        from_job.extend(GPU_VARIABLES.iter().map(|v| v.to_string()));
    }
    env.extend(from_job.into_iter().map(|k| (k, EnvValue::FromJob)));
    env
}

/// Writes the lines that run the service itself.
fn service_lines(
    s: &mut String,
    spec: &ReplicaSpec,
    ctx: &ScriptContext,
    endpoints: &BTreeMap<String, String>,
) {
    if let (Some(container), Some(image)) = (&spec.container, container_image(spec, ctx)) {
        let image_dir = ctx.image_dir.display().to_string();
        s.push_str(&crate::container::run_lines(
            &crate::container::RunRequest {
                container,
                image,
                command: spec.command.as_deref(),
                env: container_env(spec, endpoints),
                gpus: spec.resources.gpu > 0,
                podman_root: format!("{}/podman", image_dir.trim_end_matches('/')),
            },
        ));
        return;
    }
    let nv = if spec.resources.gpu > 0 { " --nv" } else { "" };
    match (&spec.image, &spec.command) {
        (Some(image), None) => {
            let _ = writeln!(
                s,
                "exec apptainer run{nv} {}",
                quote(&image_path(image, ctx))
            );
        }
        (Some(image), Some(command)) => {
            let _ = writeln!(
                s,
                "exec apptainer exec{nv} {} /bin/sh -c {}",
                quote(&image_path(image, ctx)),
                quote(command)
            );
        }
        (None, Some(command)) => {
            s.push_str(command.trim_end());
            s.push('\n');
        }
        (None, None) => {
            s.push_str("echo 'stackctl: recipe has neither image nor command' >&2\nexit 1\n")
        }
    }
}

/// Writes `export PORT_<i>=<value>` (and `PORT_<NAME>`, and `PORT` for the first port).
fn port_exports(s: &mut String, i: usize, name: Option<&str>, value: &str) {
    let _ = writeln!(s, "export PORT_{i}={value}");
    if let Some(name) = name {
        let _ = writeln!(s, "export PORT_{}=\"$PORT_{i}\"", name.to_ascii_uppercase());
    }
    if i == 0 {
        s.push_str("export PORT=\"$PORT_0\"\n");
    }
}

/// The supervisor's functions, the same in every supervised script. `STACKCTL_*` variables
/// set before it: `STACKCTL_PORT_DIR` (reservations), `STACKCTL_PORT_MIN`/`_MAX`.
///
/// Port picking: under `flock` on `$STACKCTL_PORT_DIR.lock` (node-local), a port of the range
/// is taken when no socket of the node uses it (any state, from `/proc/net/tcp` and `tcp6`)
/// and no live job holds a reservation for it. A reservation is the file
/// `$STACKCTL_PORT_DIR/<port>` holding `<job id> <supervisor pid> <its start time>`; it is
/// stale once no process with that pid and start time (field 22 of `/proc/<pid>/stat`) exists.
/// This needs no call to slurmctld and survives pid reuse; the supervisor lives exactly as long
/// as the job's service (Slurm kills the whole job at its end), and removes its reservations
/// when it exits.
pub const SUPERVISOR: &str = r#"stackctl_log() { echo "stackctl: $*" >&2; }
stackctl_start_time() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  set -- $stat
  echo "${20}"
}
stackctl_reserved() {
  local id pid start
  read -r id pid start 2>/dev/null < "$STACKCTL_PORT_DIR/$1" || return 1
  [ -n "$pid" ] && [ "$(stackctl_start_time "$pid")" = "$start" ]
}
stackctl_ports_begin() {
  mkdir -p -m 1777 "$STACKCTL_PORT_DIR" 2>/dev/null
  exec 9>>"$STACKCTL_PORT_DIR.lock"
  chmod 666 "$STACKCTL_PORT_DIR.lock" 2>/dev/null
  if command -v flock >/dev/null 2>&1; then
    flock -w 120 9 || stackctl_log "no port lock after 120 s; picking without it"
  else
    stackctl_log "flock not found; picking ports without the node lock"
  fi
  STACKCTL_USED=" "
  local f line local_addr p
  for f in /proc/net/tcp /proc/net/tcp6; do
    [ -r "$f" ] || continue
    while read -r _ local_addr _; do
      p=${local_addr##*:}
      [[ $p =~ ^[0-9A-Fa-f]{4}$ ]] && STACKCTL_USED+="$((16#$p)) "
    done < "$f"
  done
  STACKCTL_SELF_START=$(stackctl_start_time $$)
}
stackctl_pick_port() {
  local span=$((STACKCTL_PORT_MAX - STACKCTL_PORT_MIN + 1)) first=$((RANDOM % (STACKCTL_PORT_MAX - STACKCTL_PORT_MIN + 1))) i p
  for ((i = 0; i < span; i++)); do
    p=$((STACKCTL_PORT_MIN + (first + i) % span))
    case "$STACKCTL_USED" in *" $p "*) continue ;; esac
    stackctl_reserved "$p" && continue
    echo "$STACKCTL_TASK $$ $STACKCTL_SELF_START" > "$STACKCTL_PORT_DIR/$p" || continue
    STACKCTL_USED+="$p "
    STACKCTL_RESERVED+=" $p"
    STACKCTL_PICKED=$p
    return 0
  done
  stackctl_log "no free port in $STACKCTL_PORT_MIN-$STACKCTL_PORT_MAX"
  return 1
}
stackctl_ports_end() { exec 9>&-; }
stackctl_cleanup() {
  local p id pid start
  for p in $STACKCTL_RESERVED; do
    read -r id pid start 2>/dev/null < "$STACKCTL_PORT_DIR/$p"
    [ "$pid" = "$$" ] && rm -f "$STACKCTL_PORT_DIR/$p"
  done
}
stackctl_addr() {
  local addr
  addr=$(getent ahostsv4 "$(hostname)" 2>/dev/null | awk 'NR == 1 { print $1 }')
  [ -n "$addr" ] || addr=$(hostname -I 2>/dev/null | awk '{ print $1 }')
  [ -n "$addr" ] || addr=$(hostname)
  echo "$addr"
}
stackctl_report() {
  local current new field fields ready_at=""
  current=$(squeue -h -j "$STACKCTL_TASK" -o %k 2>/dev/null) || return 1
  case "$current" in stackctl/v1\;*) ;; *) stackctl_log "no marker in this job's comment; not recording"; return 1 ;; esac
  IFS=';' read -ra fields <<< "$current"
  new=""
  for field in "${fields[@]}"; do
    case "$field" in
      ready_at=*) ready_at=${field#ready_at=} ;;
      health=* | addr=* | ports=*) ;;
      *) new+="${new:+;}$field" ;;
    esac
  done
  [ -n "$1" ] && new+=";health=$1"
  [ "$1" = ready ] && new+=";ready_at=${ready_at:-$(date +%s)}"
  new+=";addr=$STACKCTL_ADDR"
  [ -n "$STACKCTL_PORTS" ] && new+=";ports=$STACKCTL_PORTS"
  if [ "${#new}" -gt 1024 ]; then
    stackctl_log "the comment would exceed 1024 characters; not recording"
    return 0
  fi
  [ "$new" = "$current" ] && return 0
  scontrol update "JobId=$STACKCTL_TASK" "Comment=$new"
}
stackctl_http_probe() {
  if command -v curl >/dev/null 2>&1; then
    curl -fsS -o /dev/null --max-time "$STACKCTL_TIMEOUT" "http://127.0.0.1:$1$2" 2>/dev/null
  else
    timeout "$STACKCTL_TIMEOUT" bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0" || exit 1
      printf "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" "$1" >&3
      read -r _ status _ <&3
      [[ $status == [23][0-9][0-9] ]]' "$1" "$2" 2>/dev/null
  fi
}
stackctl_tcp_probe() {
  timeout "$STACKCTL_TIMEOUT" bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0"' "$1" 2>/dev/null
}
stackctl_probe_loop() {
  local started=$SECONDS failures=0 state=starting recorded=starting
  while :; do
    sleep "$STACKCTL_INTERVAL"
    if stackctl_probe; then
      failures=0
      state=ready
    elif ((SECONDS - started >= STACKCTL_START_PERIOD)); then
      failures=$((failures + 1))
      ((failures >= STACKCTL_THRESHOLD)) && state=unhealthy
    fi
    if [ "$state" != "$recorded" ]; then
      stackctl_log "health: $state"
      stackctl_report "$state" && recorded=$state
    fi
    if [ "$state" = unhealthy ] && [ "$STACKCTL_ON_FAILURE" = restart ]; then
      stackctl_log "unhealthy after $failures failed probes; stopping the service (exit $STACKCTL_UNHEALTHY_EXIT)"
      kill -USR1 $$
      sleep 0.2
      kill -TERM "$STACKCTL_SERVICE_PID" 2>/dev/null
      for _ in 1 2 3 4 5 6 7 8 9 10; do
        kill -0 "$STACKCTL_SERVICE_PID" 2>/dev/null || exit 0
        sleep 1
      done
      kill -KILL "$STACKCTL_SERVICE_PID" 2>/dev/null
      exit 0
    fi
  done
}
stackctl_forward() { [ -n "$STACKCTL_SERVICE_PID" ] && kill "-$1" "$STACKCTL_SERVICE_PID" 2>/dev/null; }
"#;

/// Writes the supervisor's settings and functions, picks the ports and exports them.
fn supervisor_prelude(s: &mut String, spec: &ReplicaSpec) {
    s.push_str("# stackctl supervisor: see `render::script` and docs/readiness-and-updates.md.\n");
    s.push_str("STACKCTL_TASK=\"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}\"\n");
    s.push_str(
        "STACKCTL_PORT_DIR=/tmp/stackctl-ports\nSTACKCTL_PORT_MIN=20000\nSTACKCTL_PORT_MAX=29999\n",
    );
    let _ = writeln!(s, "STACKCTL_UNHEALTHY_EXIT={UNHEALTHY_EXIT_CODE}");
    if let Some(health) = &spec.health {
        health_settings(s, health);
    }
    s.push_str(SUPERVISOR);
    s.push_str("STACKCTL_RESERVED=\"\"\nSTACKCTL_SERVICE_PID=\"\"\nSTACKCTL_UNHEALTHY=\"\"\n");
    s.push_str("trap stackctl_cleanup EXIT\n");
    s.push_str("trap 'stackctl_forward TERM' TERM\ntrap 'stackctl_forward CONT' CONT\n");
    s.push_str("trap 'STACKCTL_UNHEALTHY=1' USR1\n");
    s.push_str("STACKCTL_ADDR=$(stackctl_addr)\n");
    if spec.has_auto_ports() {
        s.push_str("stackctl_ports_begin\n");
    }
    let mut actual = Vec::new();
    for (i, port) in spec.ports.iter().enumerate() {
        match port.port {
            PortValue::Fixed(number) => {
                port_exports(s, i, port.name.as_deref(), &number.to_string())
            }
            PortValue::Auto => {
                s.push_str("stackctl_pick_port || exit 1\n");
                port_exports(s, i, port.name.as_deref(), "$STACKCTL_PICKED");
            }
        }
        actual.push(format!("$PORT_{i}"));
    }
    if spec.has_auto_ports() {
        s.push_str("stackctl_ports_end\n");
    }
    let _ = writeln!(s, "STACKCTL_PORTS=\"{}\"", actual.join(","));
}

/// Writes the health check's settings and its `stackctl_probe` function.
fn health_settings(s: &mut String, health: &HealthSpec) {
    let on_failure = match health.on_failure {
        OnFailure::Restart => "restart",
        OnFailure::Ignore => "ignore",
    };
    let _ = writeln!(
        s,
        "STACKCTL_INTERVAL={}\nSTACKCTL_TIMEOUT={}\nSTACKCTL_START_PERIOD={}\nSTACKCTL_THRESHOLD={}\nSTACKCTL_ON_FAILURE={on_failure}",
        health.interval, health.timeout, health.start_period, health.failure_threshold
    );
    let probe = match &health.probe {
        Probe::Http { port, path } => {
            format!("stackctl_http_probe \"$PORT_{port}\" {}", quote(path))
        }
        Probe::Tcp { port } => format!("stackctl_tcp_probe \"$PORT_{port}\""),
        // The check runs with the service's environment; `timeout` and bash are found first,
        // with the supervisor's.
        Probe::Command(command) => format!(
            "(stackctl_user_env; exec \"$STACKCTL_TIMEOUT_BIN\" \"$STACKCTL_TIMEOUT\" \"$STACKCTL_BASH\" -c {}) >/dev/null 2>&1",
            quote(command)
        ),
    };
    s.push_str("STACKCTL_TIMEOUT_BIN=$(command -v timeout || echo timeout)\nSTACKCTL_BASH=$BASH\n");
    let _ = writeln!(s, "stackctl_probe() {{ {probe}; }}");
}

/// Starts the service, the probe loop (or the one-time record) and waits.
fn supervisor_main(s: &mut String, spec: &ReplicaSpec) {
    if spec.health.is_some() {
        s.push_str(
            "stackctl_report starting || stackctl_log \"could not record health=starting\"\n",
        );
    } else {
        // No health check: ready when running; only the address and ports to record.
        s.push_str(
            "stackctl_report \"\" || stackctl_log \"could not record the address and ports\"\n",
        );
    }
    s.push_str("stackctl_service &\nSTACKCTL_SERVICE_PID=$!\n");
    if spec.health.is_some() {
        s.push_str("stackctl_probe_loop &\nSTACKCTL_PROBE_PID=$!\n");
    }
    s.push_str(
        "while :; do\n  wait \"$STACKCTL_SERVICE_PID\"\n  STACKCTL_RC=$?\n  kill -0 \"$STACKCTL_SERVICE_PID\" 2>/dev/null || break\ndone\n",
    );
    if spec.health.is_some() {
        s.push_str("kill \"$STACKCTL_PROBE_PID\" 2>/dev/null\n");
    }
    s.push_str("[ -n \"$STACKCTL_UNHEALTHY\" ] && exit \"$STACKCTL_UNHEALTHY_EXIT\"\nexit \"$STACKCTL_RC\"\n");
}

/// Returns the stdout and stderr log files of the job `job_id` of `service`:
/// `<log_dir>/<stack>.<service>-<array>_<index>.out` and `.err`, named by the same id plan and
/// status print. [`render`] writes the same rule as Slurm's `%A_%a` pattern.
pub fn log_paths(ctx: &ScriptContext, service: &ServiceAddr, job_id: &JobId) -> (PathBuf, PathBuf) {
    log_paths_named(&ctx.log_dir, service, &job_id.to_string())
}

/// The one naming rule behind [`log_paths`] and the `--output`/`--error` lines of [`render`].
fn log_paths_named(
    log_dir: &std::path::Path,
    service: &ServiceAddr,
    id: &str,
) -> (PathBuf, PathBuf) {
    let stem = format!("{service}-{id}");
    (
        log_dir.join(format!("{stem}.out")),
        log_dir.join(format!("{stem}.err")),
    )
}

/// Returns an image reference as apptainer should see it: URIs and absolute paths as written,
/// other paths under the image directory.
fn image_path(image: &str, ctx: &ScriptContext) -> String {
    if is_in_image_dir(image) {
        ctx.image_dir.join(image).display().to_string()
    } else {
        image.to_owned()
    }
}

/// Returns whether an image is looked up in the image directory (neither a URI nor absolute).
pub fn is_in_image_dir(image: &str) -> bool {
    !(image.contains("://") || image.starts_with('/'))
}

/// Reads the spec back from a script rendered by [`render`].
pub fn spec_of_script(script: &str) -> Option<ReplicaSpec> {
    let line = script
        .lines()
        .find_map(|l| l.strip_prefix(SPEC_LINE_PREFIX))?;
    serde_json::from_str(line).ok()
}

/// The job of one run of a one-shot job (`kind: job`): [`render_with_endpoints`]'s options
/// (`--begin` for a retry after its backoff), and a script that makes the run's results
/// directory, records the run's start and end in it (`run`, see
/// [`crate::observed::runs`]) and runs the command in a subshell with the job's environment,
/// its `endpoint_env` and target variables (`endpoints`), `STACKCTL_RESULTS_DIR` and
/// `STACKCTL_COMMIT`, then exits with the command's exit code.
pub fn render_job(
    service: &ServiceAddr,
    spec: &ReplicaSpec,
    marker: &Marker,
    ctx: &ScriptContext,
    endpoints: &BTreeMap<String, String>,
    (commit, wait): (Option<&str>, u64),
) -> JobRequest {
    let mut job = render_with_endpoints(service, spec, marker, ctx, &BTreeMap::new());
    job.options.begin = (wait > 0).then(|| format!("now+{wait}"));
    let dir = run_dir_parent(ctx, marker);
    let mut s = String::from(SPEC_LINE_PREFIX);
    s.push_str(&spec.to_canonical_json());
    s.push('\n');
    s.push_str("# stackctl one-shot job: see docs/jobs.md.\n");
    s.push_str("export PATH=\"${PATH:-/usr/local/bin:/usr/bin:/bin}\"\n");
    let _ = writeln!(s, "export STACKCTL_STACK={}", quote(&service.stack));
    let _ = writeln!(s, "export STACKCTL_SERVICE={}", quote(&service.service));
    s.push_str("export STACKCTL_REPLICA=\"${SLURM_ARRAY_TASK_ID}\"\n");
    if let Some(bind) = &spec.resources.cpu_bind {
        let _ = writeln!(s, "export SLURM_CPU_BIND={}", quote(bind));
    }
    let _ = writeln!(s, "export STACKCTL_COMMIT={}", quote(commit.unwrap_or("")));
    s.push_str("STACKCTL_RUN=\"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}\"\n");
    let _ = writeln!(
        s,
        "export STACKCTL_RESULTS_DIR={}/\"$STACKCTL_RUN\"",
        quote(&dir.display().to_string())
    );
    let _ = writeln!(s, "STACKCTL_SPEC={}", quote(&marker.spec.0));
    s.push_str(JOB_RECORD);
    s.push_str("mkdir -p \"$STACKCTL_RESULTS_DIR\" || exit 1\n");
    s.push_str("STACKCTL_START=$(date +%s)\nstackctl_record\n");
    s.push_str("(\n");
    let secrets = (!spec.secret_env.is_empty())
        .then(|| ctx.secrets_file(&marker.spec))
        .flatten();
    user_environment(&mut s, spec, endpoints, secrets.as_deref(), &[]);
    for (key, value) in endpoints {
        if key.starts_with("STACKCTL_TARGET_") {
            let _ = writeln!(s, "export {key}={}", quote(value));
        }
    }
    service_lines(&mut s, spec, ctx, endpoints);
    s.push_str(")\nSTACKCTL_RC=$?\nstackctl_record \"$STACKCTL_RC\"\nexit \"$STACKCTL_RC\"\n");
    job.body = s;
    job
}

/// The shell function a job's script records its run with: the `run` file in its results
/// directory, written whole and renamed into place, with `exit=` and `end=` once given the
/// exit code.
const JOB_RECORD: &str = r#"stackctl_record() {
  {
    printf 'job=%s\nspec=%s\ncommit=%s\nstart=%s\n' "$STACKCTL_RUN" "$STACKCTL_SPEC" "$STACKCTL_COMMIT" "$STACKCTL_START"
    if [ -n "$1" ]; then printf 'exit=%s\nend=%s\n' "$1" "$(date +%s)"; fi
  } > "$STACKCTL_RESULTS_DIR/.run.tmp" && mv -f "$STACKCTL_RESULTS_DIR/.run.tmp" "$STACKCTL_RESULTS_DIR/run" \
    || echo "stackctl: could not record the run in $STACKCTL_RESULTS_DIR" >&2
}
"#;

/// The directory of a job's results, `<log_dir>/results/<owner>`, whose subdirectories
/// `<stack>.<service>/<spec>/<job id>/` hold one run each ([`crate::observed::runs`]).
pub fn results_root(log_dir: &std::path::Path, owner: &crate::desired::Owner) -> PathBuf {
    log_dir
        .join("results")
        .join(crate::observed::runs::owner_dir(owner))
}

/// The directory whose subdirectories are the runs of `marker`'s job with its spec.
fn run_dir_parent(ctx: &ScriptContext, marker: &Marker) -> PathBuf {
    results_root(&ctx.log_dir, &marker.owner)
        .join(marker.service.to_string())
        .join(&marker.spec.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::{ContainerSpec, ImageDefinition, Runtime};
    use crate::desired::{Owner, PortSpec, PortValue, ResourceSpec, SlurmSpec};

    fn spec(runtime: Runtime) -> ReplicaSpec {
        ReplicaSpec {
            container: Some(ContainerSpec {
                runtime,
                build: Some(ImageDefinition {
                    file: "recipes/web/Dockerfile".into(),
                    sha256: "00112233aabbccdd".into(),
                    text: String::new(),
                }),
                binds: vec![],
            }),
            setup: vec!["module load charliecloud".into()],
            secret_env: Default::default(),
            image: Some("site".into()),
            command: Some("serve".into()),
            resources: ResourceSpec {
                nodes: 1,
                cpu: 1,
                memory: None,
                memory_per_cpu: None,
                gpu: 0,
                gpu_type: None,
                time_limit: None,
                cpu_bind: None,
            },
            environment: [("LD_PRELOAD".to_owned(), "/x.so".to_owned())].into(),
            ports: vec![PortSpec {
                name: None,
                port: PortValue::Auto,
            }],
            slurm: SlurmSpec::default(),
            health: None,
            endpoint_env: BTreeMap::new(),
        }
    }

    fn body(spec: &ReplicaSpec) -> String {
        let service = ServiceAddr::new("s", "web");
        let marker = Marker::parse(
            "stackctl/v1;owner=o;stack=s;svc=web;spec=0123456789abcdef;nonce=n;idx=0",
        )
        .unwrap();
        assert_eq!(marker.owner, Owner::parse("o").unwrap());
        let ctx = ScriptContext {
            log_dir: "/logs".into(),
            image_dir: "/shared/images".into(),
            secrets_dir: None,
        };
        render(&service, spec, &marker, &ctx).body
    }

    #[test]
    fn a_container_service_runs_setup_then_its_built_image_with_its_environment_only_inside() {
        let body = body(&spec(Runtime::Charliecloud));
        let service = body
            .split("stackctl_service() {\n")
            .nth(1)
            .unwrap()
            .split("\n}\n")
            .next()
            .unwrap();
        // Setup first, then the runtime; the environment is never exported on the host.
        assert!(
            service.starts_with("module load charliecloud\n"),
            "{service}"
        );
        assert!(!service.contains("stackctl_user_env"), "{service}");
        assert!(service.contains("stackctl_env+=('--set-env=LD_PRELOAD=/x.so')"));
        assert!(service.contains("for stackctl_v in PORT_0 PORT STACKCTL_STACK"));
        assert!(
            service.ends_with(
                "exec ch-run \"${stackctl_env[@]}\" '/shared/images/site-00112233aabbccdd' -- /bin/sh -c 'serve'"
            ),
            "{service}"
        );
        // Podman's built image is in its store under image_dir, by the same hash.
        let podman = body_of(Runtime::Podman);
        assert!(
            podman.contains(
                "exec podman --root '/shared/images/podman' run --rm --network=host --init --sig-proxy=true \"${stackctl_env[@]}\" 'localhost/site:00112233aabbccdd' /bin/sh -c 'serve'"
            ),
            "{podman}"
        );
        // Apptainer's is a .sif beside the others.
        let apptainer = body_of(Runtime::Apptainer);
        assert!(
            apptainer.contains(
                "apptainer exec --cleanenv '/shared/images/site-00112233aabbccdd.sif' /bin/sh -c 'serve'"
            ),
            "{apptainer}"
        );
    }

    fn body_of(runtime: Runtime) -> String {
        body(&spec(runtime))
    }
}
