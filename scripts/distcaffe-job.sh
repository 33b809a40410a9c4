# Shared by the job scripts in scripts/slurm, scripts/pbs and scripts/torque (sourced, not run; the scripts find
# it with `distcaffe scripts lib`, in a checkout or a pip install alike): deciding whether to resubmit after a
# walltime stop, the PBS/Torque walltime and resubmission, and the `distcaffe train` arguments.
#
# Knobs (environment variables, all optional; every DISTCAFFE_* setting survives a resubmission):
#   DISTCAFFE_GPU           the -gpu value (default: all; set it empty for CPU ranks)
#   DISTCAFFE_VENV          virtualenv to activate (default: $HOME/distcaffe-venv)
#   DISTCAFFE_MODULES       environment modules to load first, e.g. "cuda/12.4 openmpi/4.1"
#   DISTCAFFE_CMD           the command that runs distcaffe (default: distcaffe)
#   DISTCAFFE_SRUN_MPI      srun's --mpi= plugin for multi-node SLURM jobs (default: pmix)
#   DISTCAFFE_WALLTIME      PBS/Torque walltime HH:MM:SS when qstat cannot tell it
#   DISTCAFFE_STOP_MARGIN   PBS/Torque: seconds before the walltime to snapshot and stop (default: 180)
#   DISTCAFFE_MAX_RESUBMIT  how many times a job may resubmit itself (default: 20)
#   DISTCAFFE_JOB_SCRIPT    the script to resubmit (default: $0; PBS copies the script, so set it there)
#   DISTCAFFE_RESUBMIT_COUNT  set by the scripts on each resubmission

# dc_solver_field SOLVER FIELD: the first value of a top-level field in a solver prototxt (quotes removed).
dc_solver_field() {
    sed -n -E "s/^[[:space:]]*$2[[:space:]]*:[[:space:]]*\"?([^\"#]*)\"?.*/\1/p" "$1" | head -n 1 | sed 's/[[:space:]]*$//'
}

# dc_snapshot_prefix SOLVER: the prefix snapshots are written with (Caffe's default: the solver file's stem;
# a directory prefix gets the stem appended).
dc_snapshot_prefix() {
    local prefix stem
    prefix="$(dc_solver_field "$1" snapshot_prefix)"
    stem="${1%.*}"
    if [ -z "$prefix" ]; then
        prefix="$stem"
    elif [ -d "$prefix" ]; then
        prefix="$prefix/$(basename "$stem")"
    fi
    echo "$prefix"
}

# dc_latest_state SOLVER: the .solverstate with the highest iteration for this solver, or nothing.
dc_latest_state() {
    local prefix best="" best_iter=-1 f it
    prefix="$(dc_snapshot_prefix "$1")"
    for f in "${prefix}"_iter_*.solverstate "${prefix}"_iter_*.solverstate.h5; do
        [ -e "$f" ] || continue
        it="${f##*_iter_}"
        it="${it%%.*}"
        case "$it" in ''|*[!0-9]*) continue ;; esac
        if [ "$it" -gt "$best_iter" ]; then
            best_iter="$it"
            best="$f"
        fi
    done
    echo "$best"
}

# dc_train_args SOLVER [EXTRA...]: `train -solver S [-gpu G] -snapshot auto EXTRA...`, one per line; the CLI
# resumes from the newest .solverstate of the solver's snapshot_prefix, or starts from scratch.
dc_train_args() {
    local solver="$1"
    shift
    printf '%s\n' train -solver "$solver"
    if [ -n "${DISTCAFFE_GPU-all}" ]; then
        printf '%s\n' -gpu "${DISTCAFFE_GPU-all}"
    fi
    printf '%s\n' -snapshot auto
    [ "$#" -gt 0 ] && printf '%s\n' "$@"
    return 0
}

# dc_qsub_vars: the `qsub -v` list for a resubmission: SOLVER, TRAIN_FLAGS and every DISTCAFFE_* variable of
# this job (empty ones too: DISTCAFFE_GPU= means CPU), the resubmission count advanced by one; values holding a
# comma are quoted, as qsub wants.
dc_qsub_vars() {
    local name value list="" count=$(( ${DISTCAFFE_RESUBMIT_COUNT:-0} + 1 ))
    for name in SOLVER TRAIN_FLAGS $(compgen -e | grep '^DISTCAFFE_' | sort); do
        [ "$name" = DISTCAFFE_RESUBMIT_COUNT ] && continue
        [ -n "${!name+set}" ] || continue
        value="${!name}"
        case "$value" in *,*) value="'$value'" ;; esac
        list="$list$name=$value,"
    done
    echo "${list}DISTCAFFE_RESUBMIT_COUNT=$count"
}

# dc_should_resubmit SOLVER: true when training stopped before max_iter (a walltime snapshot) and the
# resubmission budget is not used up.
dc_should_resubmit() {
    local state max_iter it count="${DISTCAFFE_RESUBMIT_COUNT:-0}"
    state="$(dc_latest_state "$1")"
    max_iter="$(dc_solver_field "$1" max_iter)"
    [ -n "$state" ] && [ -n "$max_iter" ] || return 1
    it="${state##*_iter_}"
    it="${it%%.*}"
    if [ "$it" -ge "$max_iter" ]; then
        return 1
    fi
    if [ "$count" -ge "${DISTCAFFE_MAX_RESUBMIT:-20}" ]; then
        echo "distcaffe-job: stopped at iteration $it of $max_iter; resubmission limit reached" >&2
        return 1
    fi
    echo "distcaffe-job: stopped at iteration $it of $max_iter; resubmitting" >&2
    return 0
}

# dc_hms_seconds HH:MM:SS -> seconds (also MM:SS or SS).
dc_hms_seconds() {
    local IFS=: total=0 part
    for part in $1; do total=$(( total * 60 + 10#$part )); done
    echo "$total"
}

# dc_pbs_walltime_seconds: this PBS job's walltime (Torque's PBS_WALLTIME, else qstat, else
# DISTCAFFE_WALLTIME as HH:MM:SS), or 0 when unknown.
dc_pbs_walltime_seconds() {
    local wt=""
    if [ -n "${PBS_WALLTIME:-}" ]; then echo "$PBS_WALLTIME"; return; fi
    if [ -n "${PBS_JOBID:-}" ] && command -v qstat >/dev/null 2>&1; then
        wt="$(qstat -f "$PBS_JOBID" 2>/dev/null | sed -n -E 's/.*Resource_List.walltime = ([0-9:]+).*/\1/p' | head -n 1)"
    fi
    wt="${wt:-${DISTCAFFE_WALLTIME:-}}"
    if [ -n "$wt" ]; then dc_hms_seconds "$wt"; else echo 0; fi
}

# dc_run_until SECONDS COMMAND...: run COMMAND; send it SIGTERM after SECONDS (0: never) or when this
# script gets SIGTERM, then wait while it snapshots and stops. Returns COMMAND's exit status.
dc_run_until() {
    local seconds="$1" pid timer="" rc=0
    shift
    "$@" &
    pid=$!
    trap 'kill -TERM "$pid" 2>/dev/null' TERM
    if [ "$seconds" -gt 0 ]; then
        sleep "$seconds" &
        timer=$!
    fi
    while kill -0 "$pid" 2>/dev/null; do
        if [ -n "$timer" ] && ! kill -0 "$timer" 2>/dev/null; then
            echo "distcaffe-job: walltime is near: asking the ranks to snapshot and stop" >&2
            kill -TERM "$pid" 2>/dev/null
            timer=""
        fi
        sleep 1
    done
    wait "$pid" || rc=$?
    if [ -n "$timer" ]; then kill "$timer" 2>/dev/null; fi
    trap - TERM
    return "$rc"
}
