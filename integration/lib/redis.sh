# shellcheck shell=bash
# A private redis-server on a loopback port, for the #[ignore] Rust tests
# that need Redis (rate limits shared between MX hosts). No persistence;
# stopped by PID.

REDIS_PID=""

redis_start() {
	local port=$1 i
	redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
		--dir "$LW_IT_DIR" --daemonize no --loglevel warning \
		>"$LW_IT_DIR/redis.log" 2>&1 &
	REDIS_PID=$!
	for ((i = 0; i < LW_IT_WAIT_TENTHS; i++)); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			return 0
		fi
		kill -0 "$REDIS_PID" 2>/dev/null || break
		sleep 0.1
	done
	tail -n 20 "$LW_IT_DIR/redis.log" >&2
	die "redis-server did not start on 127.0.0.1:$port"
}

redis_stop() {
	stop_pid "$REDIS_PID" redis-server
	REDIS_PID=""
}
