# shellcheck shell=bash
# Small helpers shared by the harness: messages, ports, waiting, HTTP, packages.
# Sourced by integration/run; relies on `set -euo pipefail` from there.

# Upper bound for every wait loop, in tenths of a second, so a hung service
# fails the run quickly instead of stalling CI.
LW_IT_WAIT_TENTHS=${LW_IT_WAIT_TENTHS:-100}

# Python for lib/prvs.py. The system's own interpreter when there is one:
# a version manager's shim (pyenv) costs ~0.2 s per call.
LW_IT_PYTHON=${LW_IT_PYTHON:-}
if [[ -z $LW_IT_PYTHON ]]; then
	if [[ -x /usr/bin/python3 ]]; then LW_IT_PYTHON=/usr/bin/python3; else LW_IT_PYTHON=python3; fi
fi

say() { printf 'integration: %s\n' "$*" >&2; }
die() {
	say "error: $*"
	exit 1
}

# Milliseconds since the epoch, for the per-scenario timings.
now_ms() { date +%s%3N; }

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
	timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# Refuse to start on ports another program already listens on: the harness
# must never talk to (or stop) a service it did not start.
require_free_port() {
	local port=$1 what=$2
	if port_open "$port"; then
		die "port $port (for $what) is in use; set LW_IT_BASE_PORT to another base"
	fi
}

# Waits until 127.0.0.1:$1 accepts connections; $2 names the service, $3 is an
# optional PID that must stay alive meanwhile (fail fast when it crashed).
wait_for_port() {
	local port=$1 what=$2 pid=${3:-} i
	for ((i = 0; i < LW_IT_WAIT_TENTHS; i++)); do
		port_open "$port" && return 0
		if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
			say "$what (pid $pid) exited before listening on port $port"
			return 1
		fi
		sleep 0.1
	done
	say "$what did not listen on port $port within $((LW_IT_WAIT_TENTHS / 10))s"
	return 1
}

# Waits until nothing listens on 127.0.0.1:$1 any more.
wait_port_closed() {
	local port=$1 i
	for ((i = 0; i < LW_IT_WAIT_TENTHS; i++)); do
		port_open "$port" || return 0
		sleep 0.1
	done
	return 1
}

# Waits until process $1 is gone; returns 1 if it is still there.
wait_pid_gone() {
	local pid=$1 i
	for ((i = 0; i < LW_IT_WAIT_TENTHS; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	return 1
}

# Stops one process we started: SIGTERM, wait, then SIGKILL. Never by name.
stop_pid() {
	local pid=$1 what=$2
	[[ -n $pid ]] || return 0
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	if ! wait_pid_gone "$pid"; then
		say "$what (pid $pid) ignored SIGTERM; sending SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
		wait_pid_gone "$pid" || say "$what (pid $pid) is still running"
	fi
	wait "$pid" 2>/dev/null || true
}

# Minimal HTTP GET over bash's /dev/tcp (no curl needed on a fresh machine).
# Prints the body; returns 1 unless the status is 200.
http_get() {
	local port=$1 path=$2 response status
	# shellcheck disable=SC2016 # $1 and $2 expand in the inner bash
	response=$(timeout 5 bash -c '
		exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
		printf "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" "$2" >&3
		cat <&3' _ "$port" "$path" 2>/dev/null) || return 1
	response=${response//$'\r'/}
	status=$(head -n 1 <<<"$response")
	[[ $status == "HTTP/1."?" 200"* ]] || return 1
	# Body: everything after the first empty line.
	sed '1,/^$/d' <<<"$response"
}

# Installs the Debian packages the harness needs when any is missing. The
# preseed keeps the postfix package from configuring or starting the
# machine's default instance.
ensure_packages() {
	local missing=() need
	command -v postfix >/dev/null 2>&1 || missing+=(postfix)
	command -v smtp-sink >/dev/null 2>&1 || missing+=(postfix)
	command -v swaks >/dev/null 2>&1 || missing+=(swaks)
	command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
	command -v "$LW_IT_PYTHON" >/dev/null 2>&1 || missing+=(python3)
	# The expander's copies are signed by opendkim and checked with dkimpy.
	command -v opendkim >/dev/null 2>&1 || missing+=(opendkim)
	command -v opendkim-genkey >/dev/null 2>&1 || missing+=(opendkim-tools)
	"$LW_IT_PYTHON" -c 'import dkim' >/dev/null 2>&1 || missing+=(python3-dkim)
	((${#missing[@]} == 0)) && return 0
	need=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
	[[ $(id -u) == 0 ]] || die "missing packages ($need) and not root to install them"
	command -v apt-get >/dev/null 2>&1 || die "missing packages ($need) and no apt-get"
	say "installing: $need"
	echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null
	# No package may start its system service (opendkim, redis-server):
	# policy-rc.d says no while apt runs, unless the machine has its own.
	local policy=/usr/sbin/policy-rc.d ours=0 rc=0
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\n# listwarden integration/run, while apt-get runs\nexit 101\n' >"$policy"
		chmod 0755 "$policy"
		ours=1
	fi
	# shellcheck disable=SC2086 # word splitting of the package list is intended
	apt-get install -y -qq --no-install-recommends $need >/dev/null || rc=$?
	((ours == 0)) || rm -f -- "$policy"
	((rc == 0)) || die "apt-get install $need failed"
}
