# shellcheck shell=bash
# Helpers shared by integration/replay and benches/postfix-e2e, on top of
# lib/common.sh and lib/postfix.sh: release binaries, listwarden configs
# derived from the shipped config/listwarden.yaml, a counting smtp-sink,
# queue size, CPU time, machine facts and small statistics.
# Uses LW_IT_REPO and LW_IT_DIR.
# shellcheck disable=SC2153,SC2034 # globals shared with the callers

LW_BIN=""   # listwarden (release build)
NOOP_BIN="" # benches' no-op milter
LOADGEN_BIN=""
RP_SINK_PID=""

# Builds listwarden (release) and the benches' binaries into benches/target,
# sequentially; LW_BENCH_BIN names a listwarden binary to use instead.
rp_build() {
	local target=$LW_IT_REPO/benches/target log
	log=$(mktemp "${TMPDIR:-/tmp}/lw-build.XXXXXX")
	if [[ -n ${LW_BENCH_BIN:-} ]]; then
		LW_BIN=$LW_BENCH_BIN
	else
		say "cargo build --release --bin listwarden (target dir benches/target)"
		(cd "$LW_IT_REPO" && cargo build --quiet --release --bin listwarden --target-dir "$target") >"$log" 2>&1 || {
			tail -n 30 "$log" >&2
			die "cargo build failed"
		}
		LW_BIN=$target/release/listwarden
	fi
	if [[ ${RP_NEED_BENCH_BINS:-1} == 1 ]]; then
		say "cargo build --release (benches: noop-milter, loadgen)"
		(cd "$LW_IT_REPO/benches" && cargo build --quiet --release --bins) >"$log" 2>&1 || {
			tail -n 30 "$log" >&2
			die "cargo build of benches/ failed"
		}
		NOOP_BIN=$target/release/noop-milter
		LOADGEN_BIN=$target/release/loadgen
	fi
	rm -f "$log"
	[[ -x $LW_BIN ]] || die "no listwarden binary at $LW_BIN"
}

# Writes a listwarden config $4 from the shipped config/listwarden.yaml with
# milter.listen $1, metrics.listen $2 (IP:PORT or off), trusted networks as
# shipped ($3 = trusted) or none ($3 = untrusted), and the example key by
# absolute path. Every edit is checked, then `check-config` must pass.
rp_lw_config() {
	local listen=$1 metrics=$2 trust=$3 out=$4 shipped=$LW_IT_REPO/config/listwarden.yaml
	awk -v listen="$listen" -v metrics="$metrics" -v trust="$trust" -v keydir="$LW_IT_REPO/config/keys/" '
		/^milter:/ { section = "milter" } /^metrics:/ { section = "metrics" }
		/^  listen: / && section == "milter" { print "  listen: \"" listen "\""; next }
		/^  listen: / && section == "metrics" { print "  listen: \"" metrics "\""; next }
		/^      file: keys\// { sub(/file: keys\//, "file: " keydir) }
		skipping && /^  - / { next }
		{ skipping = 0 }
		/^trusted_networks:$/ && trust == "untrusted" { print "trusted_networks: []"; skipping = 1; next }
		{ print }' "$shipped" >"$out"
	if ! grep -qF "listen: \"$listen\"" "$out" || ! grep -qF "listen: \"$metrics\"" "$out" ||
		! grep -qF "file: $LW_IT_REPO/config/keys/" "$out"; then
		die "could not derive $out from $shipped (did the shipped config change shape?)"
	fi
	if [[ $trust == untrusted ]] && { ! grep -q '^trusted_networks: \[\]$' "$out" || grep -q '^  - 127\.0\.0\.1/32' "$out"; }; then
		die "could not empty trusted_networks in $out"
	fi
	"$LW_BIN" check-config "$out" >"$out.check" 2>&1 || {
		cat "$out.check" >&2
		die "listwarden check-config rejected $out"
	}
}

# Waits for unix socket $1.
rp_wait_socket() {
	local i
	for ((i = 0; i < LW_IT_WAIT_TENTHS; i++)); do
		[[ -S $1 ]] && return 0
		sleep 0.1
	done
	return 1
}

# smtp-sink on port $1 that only counts (no dump files): the fastest
# receiver, for throughput runs.
rp_sink_start() {
	smtp-sink -4 -u "$SINK_USER" -h lw-bench-sink "127.0.0.1:$1" 256 >"$LW_IT_DIR/sink.log" 2>&1 &
	RP_SINK_PID=$!
	wait_for_port "$1" smtp-sink "$RP_SINK_PID"
}

rp_sink_stop() {
	stop_pid "$RP_SINK_PID" smtp-sink
	RP_SINK_PID=""
}

# Messages in the private queue (maildrop, incoming, active, deferred,
# hold), counted from the queue files: cheap enough to poll often.
rp_queue_count() {
	local d n=0 c
	for d in maildrop incoming active deferred hold; do
		[[ -d $PF_QUEUE/$d ]] || continue
		c=$(find "$PF_QUEUE/$d" -type f 2>/dev/null | wc -l)
		n=$((n + c))
	done
	echo "$n"
}

# Messages in the queue as postqueue -p reports them (the operator's view).
rp_postqueue_count() {
	postqueue -c "$PF_CONF" -p 2>/dev/null |
		awk '/^Mail queue is empty/ { n = 0 } /^-- .* in [0-9]+ Request/ { n = $(NF - 1) } END { print n + 0 }'
}

# Waits until the queue is empty, at most $1 seconds.
rp_wait_queue_empty() {
	local limit=$(($1 * 20)) i
	for ((i = 0; i < limit; i++)); do
		(($(rp_queue_count) == 0)) && return 0
		sleep 0.05
	done
	return 1
}

# CPU time (user + system, clock ticks) of process $1 and its threads; 0 without one.
rp_cpu_ticks() {
	if [[ -n ${1:-} && -r /proc/$1/stat ]]; then
		awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
	else
		echo 0
	fi
}

# One line about the machine, to stderr.
rp_machine() {
	say "machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo), load average $(cut -d' ' -f1-3 /proc/loadavg)"
}

# Median, minimum and maximum of the numbers given as arguments.
rp_median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
rp_min() { printf '%s\n' "$@" | sort -g | head -n 1; }
rp_max() { printf '%s\n' "$@" | sort -g | tail -n 1; }
# $1 / $2 with two decimals.
rp_ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f\n", a / b; else print "-" }'; }
