# shellcheck shell=bash
# Building, configuring, starting and stopping the listwarden binary under test.
# Uses LW_IT_DIR, LW_IT_REPO and LW_IT_HOME, set by integration/run.
# shellcheck disable=SC2153

LW_BIN=""
LW_PID=""
LW_CONFIG=""
LW_LOG=""
LW_KEY_FILE="" # the run's BATV signing key (key id 1)

# Builds the binaries (the milter and the expander) with the repository's
# target dir, unless LW_IT_BIN names a milter binary (the expander is then
# the listwarden-expand beside it, or LW_IT_EXPAND_BIN, else built).
# The build has the test-only `fault-injection` feature: a sender named
# listwarden-fault-panic-STAGE or listwarden-fault-sleep-STAGE-SECS makes that
# message's handling panic or stall (the fault-* scenarios, faults X2/X3 of TESTING.md);
# every other message is handled exactly as in a release build.
lw_build() {
	local target=${CARGO_TARGET_DIR:-$LW_IT_REPO/target}
	if [[ -n ${LW_IT_BIN:-} ]]; then
		LW_BIN=$LW_IT_BIN
		LW_EXPAND_BIN=${LW_IT_EXPAND_BIN:-$(dirname "$LW_BIN")/listwarden-expand}
		if [[ ! -x $LW_EXPAND_BIN ]]; then
			say "cargo build --bin listwarden-expand"
			(cd "$LW_IT_REPO" && cargo build --quiet --bin listwarden-expand) >"$LW_IT_DIR/cargo-build.log" 2>&1 ||
				die "cargo build failed"
			LW_EXPAND_BIN=$target/debug/listwarden-expand
		fi
	else
		say "cargo build --bin listwarden --features fault-injection --bin listwarden-expand"
		if ! (cd "$LW_IT_REPO" && cargo build --quiet --bin listwarden --bin listwarden-expand --features listwarden/fault-injection) >"$LW_IT_DIR/cargo-build.log" 2>&1; then
			tail -n 40 "$LW_IT_DIR/cargo-build.log" >&2
			die "cargo build failed"
		fi
		LW_BIN=$target/debug/listwarden
		LW_EXPAND_BIN=$target/debug/listwarden-expand
	fi
	[[ -x $LW_BIN ]] || die "no listwarden binary at $LW_BIN"
	[[ -x $LW_EXPAND_BIN ]] || die "no listwarden-expand binary at $LW_EXPAND_BIN"
}

# Makes a fresh signing key for the run: 32 random bytes, base64, as the
# README tells operators to make theirs. Readable by root only.
lw_make_key() {
	mkdir -p "$LW_IT_DIR/keys"
	chmod 0700 "$LW_IT_DIR/keys"
	LW_KEY_FILE=$LW_IT_DIR/keys/1.key
	(umask 077 && head -c 32 /dev/urandom | base64 >"$LW_KEY_FILE")
}

# Writes the test config from config/listwarden.yaml.in and validates it.
lw_write_config() {
	local milter_port=$1 metrics_port=$2 rc=0
	LW_CONFIG=$LW_IT_DIR/listwarden.yaml
	lw_make_key
	sed -e "s/@MILTER_PORT@/$milter_port/g" -e "s/@METRICS_PORT@/$metrics_port/g" \
		-e "s|@KEY_FILE@|$LW_KEY_FILE|g" \
		"$LW_IT_HOME/config/listwarden.yaml.in" >"$LW_CONFIG"
	"$LW_BIN" check-config "$LW_CONFIG" >"$LW_IT_DIR/check-config.log" 2>&1 || rc=$?
	if ((rc != 0)); then
		cat "$LW_IT_DIR/check-config.log" >&2
		die "listwarden check-config rejected the test config (exit $rc)"
	fi
}

# Starts the milter and waits for its milter port and /healthz.
lw_start() {
	local milter_port=$1 metrics_port=$2 i
	LW_LOG=$LW_IT_DIR/listwarden.log
	LISTWARDEN_LOG=${LW_IT_LOG:-info} "$LW_BIN" run --config "$LW_CONFIG" >"$LW_LOG" 2>&1 &
	LW_PID=$!
	if ! wait_for_port "$milter_port" "listwarden milter" "$LW_PID" ||
		! wait_for_port "$metrics_port" "listwarden metrics" "$LW_PID"; then
		lw_print_log 40
		die "listwarden did not start"
	fi
	for ((i = 0; i < LW_IT_WAIT_TENTHS; i++)); do
		http_get "$metrics_port" /healthz >/dev/null && return 0
		sleep 0.1
	done
	lw_print_log 40
	die "listwarden /healthz did not answer 200"
}

# Stops listwarden with SIGTERM; returns its exit status (or 124 when it had
# to be killed), so the run can check that it shuts down cleanly.
lw_stop() {
	local rc=0
	[[ -n $LW_PID ]] || return 0
	kill -TERM "$LW_PID" 2>/dev/null || true
	if ! wait_pid_gone "$LW_PID"; then
		kill -KILL "$LW_PID" 2>/dev/null || true
		wait "$LW_PID" 2>/dev/null || true
		LW_PID=""
		return 124
	fi
	wait "$LW_PID" 2>/dev/null || rc=$?
	LW_PID=""
	return "$rc"
}

# The signing key's validity_days from the written test config.
lw_validity_days() {
	awk '$1 == "validity_days:" { print $2; found = 1; exit } END { if (!found) print 7 }' "$LW_CONFIG"
}

lw_print_log() {
	local n=${1:-40}
	[[ -n $LW_LOG && -s $LW_LOG ]] || return 0
	printf -- '--- listwarden stderr (last %s lines) ---\n' "$n" >&2
	tail -n "$n" "$LW_LOG" >&2
}

# Saves the /metrics text from port $1 into file $2; returns 1 if unreachable.
lw_fetch_metrics() {
	http_get "$1" /metrics >"$2" 2>/dev/null
}

# Sum of all samples of metric $2 in the saved /metrics text $1; with more
# arguments, only of the samples whose label text contains every one of
# them (e.g. 'list="members"' 'verdict="valid"'). Prints a number.
lw_metric_sum() {
	local file=$1 metric=$2
	shift 2
	awk -v m="$metric" -v labels="$*" '
		BEGIN { n = split(labels, want, " ") }
		index($0, m " ") == 1 || index($0, m "{") == 1 {
			for (i = 1; i <= n; i++) if (index($0, want[i]) == 0) next
			s += $NF
		}
		END { printf "%g\n", s + 0 }' "$file"
}
