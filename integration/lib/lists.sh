# shellcheck shell=bash
# What the list-manager runners (integration/lists/sympa/run and
# integration/lists/mailman3/run) share: scenario bookkeeping, SMTP sends,
# waits on logs and on the sink, the listwarden config, cleanup, the report
# line, the DKIM check of the copies delivered to members (scn_dkim), and
# the complaint (scn_feedback) and one-click (scn_oneclick) scenarios every
# list manager is checked with. Sourced after common.sh, postfix.sh,
# listwarden.sh, scenario.sh and dkim.sh.
#
# The adapter: what each runner sets and defines before using these.
#   LISTS_NAME             its name in messages (sympa, mailman3)
#   SMTPD_PORT             the private Postfix's smtpd port
#   lm_stop                stops the list manager (idempotent; cleanup)
#   lm_down, lm_up         takes it down as an outage would (the interface
#                          listwarden's feedback worker uses fails), and
#                          brings it back (scn_feedback)
#   lm_print_logs          the tails of its logs, to stderr
#   lm_is_member LIST M    exit 0 while M is a member of LIST (read from
#                          the list manager's database, so also while it
#                          is down)
#   lm_unmount             optional: undoes what the runner mounted, last
#   LISTS_COPIES           sink files of the copies its scenarios saw
#                          delivered to members (scn_dkim verifies them)
# and, for scn_feedback and scn_oneclick, the FB_* and UNSUB_* variables
# described there.
# shellcheck disable=SC2153 # globals come from the runner and ../lib

say() { printf 'lists/%s: %s\n' "$LISTS_NAME" "$*" >&2; }

# A finding worth reading in the output (not a pass/fail criterion).
note() { printf 'lists-note: %s\n' "$*"; }

# --- Scenario bookkeeping -------------------------------------------------------

SCN_PASSED=0
SCN_FAILED=0
SCN_NAME=""
SCN_START=0
ERRS=() # reasons the current scenario failed

scn_begin() {
	SCN_NAME=$1
	SCN_START=$(now_ms)
	ERRS=()
	say "scenario $SCN_NAME"
}
err() { ERRS+=("$*"); }
scn_end() { report_scn "$SCN_NAME" "$SCN_START"; }

# Prints one `lists-scenario:` line (scenario $1, started at ms $2) and, for
# a failure, its reasons and the logs.
report_scn() {
	local name=$1 start=$2 took reason
	took=$(($(now_ms) - start))
	if ((${#ERRS[@]} == 0)); then
		SCN_PASSED=$((SCN_PASSED + 1))
		printf 'lists-scenario: %s pass ms=%d\n' "$name" "$took"
	else
		SCN_FAILED=$((SCN_FAILED + 1))
		printf 'lists-scenario: %s FAIL ms=%d\n' "$name" "$took"
		for reason in "${ERRS[@]}"; do printf '     %s\n' "$reason"; done
		lists_print_logs
	fi
	ERRS=()
}

lists_print_logs() {
	pf_print_log 15
	lw_print_log 10
	lm_print_logs
}

# The `lists-report:` line integration/lists/run reads.
lists_report() {
	printf 'lists-report: program=%s forged_sent=%d forged_refused=%d forged_reached=%d real_sent=%d real_recorded=%d dkim_verified=%d dkim_delivered=%d oneclick_seconds=%s seconds=%d\n' \
		"$LISTS_NAME" "$FORGED_SENT" "$FORGED_REFUSED" "$FORGED_REACHED" "$REAL_SENT" "$REAL_RECORDED" \
		"$DKIM_VERIFIED" "$DKIM_DELIVERED" "${UNSUB_SECONDS:--}" "$1"
}

# --- Files and logs --------------------------------------------------------------

# Writes template $1 with @KEY@ replaced (KEY=VALUE arguments) to $2.
render() {
	local tpl=$1 out=$2 kv args=()
	shift 2
	for kv in "$@"; do
		args+=(-e "s|@${kv%%=*}@|${kv#*=}|g")
	done
	sed "${args[@]}" "$tpl" >"$out"
}

# Waits until file $1 holds text $3 after byte offset $2 (bounded by $4
# tenths, default LISTS_WAIT_TENTHS). Returns 1 on timeout.
wait_text() {
	local file=$1 offset=$2 text=$3 tenths=${4:-$LISTS_WAIT_TENTHS} i
	for ((i = 0; i < tenths; i++)); do
		tail -c +"$((offset + 1))" -- "$file" 2>/dev/null | grep -qF -- "$text" && return 0
		sleep 0.1
	done
	return 1
}

# Lines of file $1 after byte offset $2 that contain $3.
lines_after() {
	tail -c +"$(($2 + 1))" -- "$1" 2>/dev/null | grep -F -- "$3" || true
}

# --- SMTP and the sink -------------------------------------------------------------

# Sends message file $6 over SMTP to the private Postfix: client address $1
# (XCLIENT unless 127.0.0.1), HELO $2, MAIL FROM $3, RCPT TO $4, transcript
# $5. Prints "stage<TAB>reply" (lib/scenario.sh's scn_outcome).
smtp_send() {
	local client=$1 helo=$2 from=$3 to=$4 transcript=$5 eml=$6 rc=0
	local -a args
	args=(--server 127.0.0.1 --port "$SMTPD_PORT" --timeout 30 --helo "$helo"
		--from "$from" --to "$to" --data -)
	[[ $client == 127.0.0.1 ]] || args+=(--xclient-addr "$client" --xclient-name "$helo")
	swaks "${args[@]}" < <(head -c -1 "$eml") >"$transcript" 2>&1 || rc=$?
	if ((rc != 0 && rc != 6 && (rc < 20 || rc > 29))); then
		printf 'swaks\tswaks exited with %s: %s\n' "$rc" "$(tail -n 2 "$transcript" | tr '\n' '|')"
		return 0
	fi
	scn_outcome <"$transcript"
}

# The queue ID in outcome $1 when the message was queued (250 at data).
queued_id() {
	[[ ${1%%$'\t'*} == data && ${1#*$'\t'} =~ ^250.*queued\ as\ ([0-9A-Za-z]+) ]] || return 1
	printf '%s\n' "${BASH_REMATCH[1]}"
}

# Waits (up to $2 s) until a sink file contains text $1; prints the files.
wait_sink() {
	local text=$1 secs=$2 i files
	for ((i = 0; i < secs * 10; i++)); do
		files=$(scn_sink_files "$text")
		if [[ -n $files ]]; then
			# smtp-sink writes the file while receiving: give it a moment.
			sleep 0.2
			printf '%s\n' "$files"
			return 0
		fi
		sleep 0.1
	done
	return 1
}

# The envelope sender of sink file $1 (X-Mail-Args) and its recipients.
sink_sender() { scn_sink_envelope "$1" | awk '$1 == "mail" { print $2; exit }'; }
sink_rcpts() { scn_sink_envelope "$1" | awk '$1 == "rcpt" { print tolower($2) }'; }
# Header lines (unfolded) of sink file $1 starting with $2 (case-insensitive).
sink_header() {
	awk -v want="$(tr '[:upper:]' '[:lower:]' <<<"$2")" '
		/^$/ { exit }
		/^[ \t]/ { if (cur != "") cur = cur " " substr($0, 2); next }
		{ if (cur != "" && index(tolower(cur), want) == 1) print cur; cur = $0 }
		END { if (cur != "" && index(tolower(cur), want) == 1) print cur }' "$1"
}

# --- Setup and cleanup ---------------------------------------------------------------

# Checks that ports and commands are there before anything starts.
lists_preflight() {
	local p
	for p in "${LISTS_PORTS[@]}"; do require_free_port "$p" "lists/$LISTS_NAME (base $BASE_PORT)"; done
	for p in "${LISTS_COMMANDS[@]}"; do command -v "$p" >/dev/null 2>&1 || die "missing $p"; done
}

# The run's temp dir; Postfix's daemons, smtp-sink and the list manager's
# user must be able to enter it.
lists_make_dir() {
	LW_IT_DIR=$(mktemp -d "${LW_IT_TMPDIR:-/tmp}/lw-lists-$LISTS_NAME.XXXXXX")
	chmod 0755 "$LW_IT_DIR"
	mkdir -p "$LW_IT_DIR/msgs"
}

# The listwarden config from template $1 (placeholders MILTER_PORT,
# METRICS_PORT, KEY_FILE, FEEDBACK_QUEUE and the KEY=VALUE arguments),
# checked with `listwarden check-config`.
lists_write_lw_config() {
	local tpl=$1 rc=0
	shift
	LW_CONFIG=$LW_IT_DIR/listwarden.yaml
	lw_make_key
	FB_QUEUE=$LW_IT_DIR/feedback
	mkdir -p "$FB_QUEUE"
	render "$tpl" "$LW_CONFIG" "MILTER_PORT=$MILTER_PORT" "METRICS_PORT=$METRICS_PORT" \
		"KEY_FILE=$LW_KEY_FILE" "FEEDBACK_QUEUE=$FB_QUEUE" "$@"
	"$LW_BIN" check-config "$LW_CONFIG" >"$LW_IT_DIR/check-config.log" 2>&1 || rc=$?
	((rc == 0)) || {
		cat "$LW_IT_DIR/check-config.log" >&2
		die "listwarden check-config rejected $LW_CONFIG (exit $rc)"
	}
}

# Stops everything the run started, by PID, and removes the temp dir
# (LW_LISTS_KEEP=1 keeps it; LW_LISTS_PAUSE=SECONDS waits first).
# shellcheck disable=SC2317 # called by the EXIT trap
lists_cleanup() {
	local rc=$? pid
	trap - EXIT ERR
	trap '' INT TERM HUP
	set +e
	if [[ -n ${LW_LISTS_PAUSE:-} && $LW_LISTS_PAUSE =~ ^[0-9]+$ ]] && ((LW_LISTS_PAUSE <= 600)); then
		say "pausing ${LW_LISTS_PAUSE}s (LW_LISTS_PAUSE) before stopping; temp dir $LW_IT_DIR"
		sleep "$LW_LISTS_PAUSE"
	fi
	lm_stop
	fb_worker_stop
	dkim_stop
	if [[ -n $LW_PID ]]; then lw_stop >/dev/null 2>&1; fi
	pf_stop
	sink_stop
	for pid in $(jobs -p); do stop_pid "$pid" "background job"; done
	if declare -F lm_unmount >/dev/null; then lm_unmount; fi
	if [[ -n $LW_IT_DIR && -d $LW_IT_DIR ]]; then
		if [[ ${LW_LISTS_KEEP:-0} == 1 ]]; then
			say "kept $LW_IT_DIR"
		else
			rm -rf -- "$LW_IT_DIR"
		fi
	fi
	exit "$rc"
}

lists_traps() {
	trap lists_cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	trap 'exit 129' HUP
}

# --- DKIM on the way out ---------------------------------------------------------------
#
# The private opendkim of lib/dkim.sh (the shipped opendkim.conf lines)
# after listwarden on the list manager's outbound milter path, as
# packaging/postfix/main.cf lists them: Postfix hands opendkim the header
# listwarden left, so what listwarden adds or replaces is what gets signed.
# scn_dkim verifies every copy in LISTS_COPIES with dkimpy.

LISTS_COPIES=()
DKIM_VERIFIED=0  # member deliveries (recipients) whose copy verified
DKIM_DELIVERED=0 # member deliveries checked

# Starts opendkim and appends it to Postfix parameter $1 (non_smtpd_milters
# for a list manager that submits with sendmail, smtpd_milters for one that
# sends over SMTP from localhost). Before pf_start.
lists_dkim_setup() {
	local param=$1 milters
	dkim_setup
	milters=$(postconf -c "$PF_CONF" -h "$param")
	[[ $milters == *"127.0.0.1:$MILTER_PORT"* ]] || die "$param has no listwarden milter: '$milters'"
	postconf -c "$PF_CONF" -e "$param = $milters, unix:$DKIM_SOCKET"
	say "$param = $milters, unix:$DKIM_SOCKET (listwarden, then opendkim)"
}

# Verifies sink files $2... (copies delivered to members) with dkimpy and
# adds their recipients to DKIM_VERIFIED/DKIM_DELIVERED. Errs unless each
# verifies with d= the list domain and From, List-Id, List-Unsubscribe,
# List-Unsubscribe-Post and Feedback-ID in h=, oversigned (lib/dkimcheck.py),
# and unless a second List-Unsubscribe added to a copy (and a changed
# Feedback-ID, when the copies have one) breaks the signature. $1 names the
# copies in messages. Sets DKIM_LAST (a summary) and DKIM_PRESENT (field
# name -> copies that carry it).
declare -A DKIM_PRESENT=()
DKIM_LAST=""
lists_dkim_check() {
	local what=$1 out n=0 ok=0 files=0 okfiles=0 i r f line name
	local -a results=()
	shift
	DKIM_PRESENT=()
	out=$(dkim_verify "$@" 2>&1) || err "$what: dkimcheck.py failed: $(tail -n 3 <<<"$out" | tr '\n' '|')"
	mapfile -t results < <(grep -E '^(ok|bad) ' <<<"$out")
	((${#results[@]} == $#)) || err "$what: dkimcheck.py answered for ${#results[@]} of $# files"
	i=0
	for f in "$@"; do
		r=$(sink_rcpts "$f" | wc -l)
		line=${results[$i]:-}
		i=$((i + 1))
		files=$((files + 1))
		n=$((n + r))
		if [[ $line == "ok $f present="* ]]; then
			okfiles=$((okfiles + 1))
			ok=$((ok + r))
			for name in $(tr ',' ' ' <<<"${line##* present=}"); do
				DKIM_PRESENT[$name]=$((${DKIM_PRESENT[$name]:-0} + 1))
			done
		else
			err "$what: $(basename "$f") (to $(sink_rcpts "$f" | tr '\n' ' ')): ${line:-no answer}"
		fi
	done
	grep -q '^control ok: the second List-Unsubscribe fails' <<<"$out" ||
		err "$what: a copy with a second List-Unsubscribe still verifies: $(grep '^control' <<<"$out" | tr '\n' '|')"
	! grep -q '^control bad' <<<"$out" || err "$what: $(grep '^control bad' <<<"$out" | tr '\n' '|')"
	DKIM_VERIFIED=$((DKIM_VERIFIED + ok))
	DKIM_DELIVERED=$((DKIM_DELIVERED + n))
	DKIM_LAST="$ok of $n member deliveries ($okfiles of $files copies) verify with dkimpy; copies carrying List-Unsubscribe ${DKIM_PRESENT[list-unsubscribe]:-0}, List-Unsubscribe-Post ${DKIM_PRESENT[list-unsubscribe-post]:-0}, Feedback-ID ${DKIM_PRESENT[feedback-id]:-0}; forgery controls: $(grep -c '^control ok' <<<"$out" || true) refused"
	note "dkim ($what): $DKIM_LAST"
	((ok == n && n > 0)) || err "$what: only $ok of $n member deliveries verify"
}

# Every copy the scenarios saw delivered to members (LISTS_COPIES).
scn_dkim() {
	scn_begin dkim
	if ((${#LISTS_COPIES[@]} == 0)); then
		err "no copies delivered to members were collected"
	else
		lists_dkim_check "posts" "${LISTS_COPIES[@]}"
	fi
	scn_end
}

# --- The complaint loop ----------------------------------------------------------------
#
# scn_feedback: a provider's feedback-loop report about a real delivered
# copy of list mail is sent through Postfix to the feedback address; the
# milter attributes it (list and member from the signed per-member VERP
# sender) and queues the job; `listwarden feedback-worker` removes the member
# through the list manager's own interface. Then: a forged report (a bad
# signature) removes nobody; a report sent while the list manager is down
# stays queued and the member is removed once it is back.
#
# The runner sets:
#   FB_ADDR        the feedback address (feedback.addresses)
#   FB_LIST        the list's address (lm_is_member's LIST)
#   FB_MEMBERS     three members of FB_LIST whose delivered copies carry a
#                  signed per-member VERP sender: (removed, forged-for, retry)
#   FB_COPY[M]     the sink file of the copy delivered to member M
#   FB_QUEUE       feedback.queue (lists_write_lw_config sets it)
# and may define lm_check_removed M (extra checks once M is gone, e.g. through
# the list manager's API) and lm_feedback_more REMOVED FORGED-FOR RETRY (more
# of its own, with the worker running).

FB_WORKER_PID=""
FB_WAIT=${LW_LISTS_FEEDBACK_WAIT:-60}
FB_DOWN=${LW_LISTS_FEEDBACK_DOWN:-45}
declare -A FB_COPY=()

fb_worker_start() {
	"$LW_BIN" feedback-worker -c "$LW_CONFIG" >>"$LW_IT_DIR/feedback-worker.log" 2>&1 </dev/null &
	FB_WORKER_PID=$!
}

fb_worker_stop() {
	[[ -n $FB_WORKER_PID ]] || return 0
	stop_pid "$FB_WORKER_PID" "listwarden feedback-worker"
	FB_WORKER_PID=""
}

# Jobs waiting in the queue (not done, not bad).
fb_pending() { find "$FB_QUEUE" -maxdepth 1 -type f -name '*.json' 2>/dev/null | wc -l; }

# Writes a Yahoo CFL report (ARF, the complained-of message's header as
# text/rfc822-headers, as Yahoo sends them now) about sink file $1 (a copy
# delivered to member $2, whose envelope sender becomes the Return-Path)
# to $3; report Message-ID token $4. With $5 = forged, the Return-Path's
# signature is replaced by a forged one.
fb_make_report() {
	local copy=$1 member=$2 out=$3 token=$4 sender
	sender=$(sink_sender "$copy")
	if [[ ${5:-} == forged ]]; then
		sender=$("$LW_IT_PYTHON" "$LW_IT_HOME/lib/prvs.py" forge "$sender")
	fi
	{
		cat <<-EOF
			From: Yahoo! Mail AntiSpam Feedback <feedback@arf.mail.yahoo.com>
			To: $FB_ADDR
			Subject: FW: Yahoo! Mail AntiSpam Feedback
			Message-ID: <$token@arf.mail.yahoo.com>
			Date: $(LC_ALL=C date -R)
			MIME-Version: 1.0
			Content-Type: multipart/report; report-type=feedback-report; boundary="fbl-$token"

			--fbl-$token
			Content-Type: text/plain; charset=us-ascii

			This is an email abuse report for an email message received from IP 192.0.2.25.

			--fbl-$token
			Content-Type: message/feedback-report

			Feedback-Type: abuse
			User-Agent: Yahoo!-Mail-Feedback/2.0
			Version: 0.1
			Original-Mail-From: <$sender>
			Original-Rcpt-To: <$member>
			Received-Date: $(LC_ALL=C date -R)
			Source-IP: 192.0.2.25
			Reported-Domain: ${FB_ADDR#*@}

			--fbl-$token
			Content-Type: text/rfc822-headers

			Return-Path: <$sender>
		EOF
		# The delivered copy's own header, as the member's provider kept it.
		scn_sink_message "$copy" 1 | awk '/^$/ { exit } { print }' | grep -v '^Return-Path:'
		printf '\n--fbl-%s--\n' "$token"
	} >"$out"
}

# Sends report file $1 to the feedback address as the provider would (the
# sender is the provider's, not ours). Prints the queue ID or fails.
fb_send() {
	local out
	out=$(smtp_send 98.136.0.10 mta.arf.mail.yahoo.com feedback@arf.mail.yahoo.com "$FB_ADDR" "${1%.eml}.swaks" "$1")
	queued_id "$out" || {
		printf '%s\n' "$out"
		return 1
	}
}

# Waits (up to $2 s) until member $1 is no member of FB_LIST; prints the
# seconds it took, with tenths.
fb_wait_gone() {
	local member=$1 secs=$2 t0 i ms
	t0=$(now_ms)
	for ((i = 0; i < secs * 5; i++)); do
		if ! lm_is_member "$FB_LIST" "$member"; then
			ms=$(($(now_ms) - t0))
			printf '%d.%d\n' $((ms / 1000)) $((ms % 1000 / 100))
			return 0
		fi
		sleep 0.2
	done
	return 1
}

# Waits until listwarden logged its verdict on the report with token $1;
# prints the log line.
fb_verdict() {
	local i line
	for ((i = 0; i < 100; i++)); do
		line=$(grep -F "$1@arf.mail.yahoo.com" "$LW_LOG" | grep -F 'feedback report' | tail -n 1 | tr -d '"' || true)
		[[ -n $line ]] && break
		sleep 0.1
	done
	printf '%s\n' "$line"
}

scn_feedback() {
	scn_begin feedback
	local removed=${FB_MEMBERS[0]} forged_for=${FB_MEMBERS[1]} retry=${FB_MEMBERS[2]}
	local m token eml qid verdict t0 secs pending t_down t_up line i
	for m in "$removed" "$forged_for" "$retry"; do
		[[ -n ${FB_COPY[$m]:-} && -f ${FB_COPY[$m]} ]] || err "no delivered copy for $m to report"
		lm_is_member "$FB_LIST" "$m" || err "$m is not a member of $FB_LIST before the reports"
	done
	if ((${#ERRS[@]} > 0)); then
		scn_end
		return
	fi
	fb_worker_start
	# 1. A report about the copy a member really got: the member leaves.
	token=lwfb-$RUN_ID-1
	eml=$LW_IT_DIR/msgs/feedback-1.eml
	fb_make_report "${FB_COPY[$removed]}" "$removed" "$eml" "$token"
	t0=$(now_ms)
	if qid=$(fb_send "$eml"); then
		verdict=$(fb_verdict "$token")
		say "  report 1: $(grep -oE 'list=[^ ]+ member=[^ ]+ member_from=[^ ]+|signature=[^ ]+|action=[^ ]+' <<<"$verdict" | tr '\n' ' ')"
		[[ $verdict == *"member=$removed"*"member_from=signed"* && $verdict == *"action=unsubscribe"* ]] ||
			err "report 1: listwarden's verdict is not an unsubscribe of the signed member $removed: $verdict"
		[[ $(pf_wait_delivery "$qid" || true) == sent ]] || err "report 1 (queue ID $qid) was not delivered (discarded) by Postfix"
		if secs=$(fb_wait_gone "$removed" "$FB_WAIT"); then
			secs=$(awk -v a="$t0" -v b="$(now_ms)" 'BEGIN { printf "%.1f", (b - a) / 1000 }')
			FB_SECONDS_1=$secs
			note "feedback: report sent -> $removed gone from $FB_LIST in ${secs}s"
			if declare -F lm_check_removed >/dev/null; then lm_check_removed "$removed"; fi
		else
			err "$removed is still a member ${FB_WAIT}s after the report; worker log: $(tail -n 3 "$LW_IT_DIR/feedback-worker.log" | tr '\n' '|')"
		fi
	else
		err "report 1 was not queued by Postfix: $qid"
	fi
	# 2. A forged report (the Return-Path's signature does not verify): nobody leaves.
	token=lwfb-$RUN_ID-2
	eml=$LW_IT_DIR/msgs/feedback-2.eml
	fb_make_report "${FB_COPY[$forged_for]}" "$forged_for" "$eml" "$token" forged
	if qid=$(fb_send "$eml"); then
		verdict=$(fb_verdict "$token")
		say "  forged report: $(grep -oE 'list=[^ ]+ member=[^ ]*|signature=[^ ]+|action=[^ ]+' <<<"$verdict" | tr '\n' ' ')"
		[[ $verdict == *"signature=invalid"* && $verdict == *"action=count_only"* ]] ||
			err "forged report: listwarden's verdict is not signature=invalid action=count_only: $verdict"
		# The worker looks at the queue every second.
		sleep 3
		pending=$(fb_pending)
		lm_is_member "$FB_LIST" "$forged_for" || err "the forged report removed $forged_for"
		((pending == 0)) || err "the forged report left $pending job(s) in the queue"
	else
		err "the forged report was not queued by Postfix: $qid"
	fi
	# 3. The list manager is down: the job waits, nothing is lost; back up,
	# the member leaves.
	lm_down
	t_down=$(now_ms)
	token=lwfb-$RUN_ID-3
	eml=$LW_IT_DIR/msgs/feedback-3.eml
	fb_make_report "${FB_COPY[$retry]}" "$retry" "$eml" "$token"
	if qid=$(fb_send "$eml"); then
		t0=$(now_ms)
		verdict=$(fb_verdict "$token")
		[[ $verdict == *"member=$retry"*"action=unsubscribe"* ]] || err "report 3: verdict $verdict"
		while (($(now_ms) - t_down < FB_DOWN * 1000)); do sleep 1; done
		pending=$(fb_pending)
		line=$(grep -F 'will retry' "$LW_IT_DIR/feedback-worker.log" | grep -F "member=\"$retry\"" | tail -n 1 || true)
		say "  with $LISTS_NAME down ${FB_DOWN}s: $pending job(s) queued; worker: ${line:0:240}"
		((pending == 1)) || err "with $LISTS_NAME down, $pending job(s) queued, expected 1"
		[[ -n $line ]] || err "the worker logged no failed attempt for $retry while $LISTS_NAME was down"
		lm_is_member "$FB_LIST" "$retry" || err "$retry was removed while $LISTS_NAME was down?"
		lm_up
		t_up=$(now_ms)
		if secs=$(fb_wait_gone "$retry" "$FB_WAIT"); then
			FB_SECONDS_3=$(awk -v a="$t0" -v b="$(now_ms)" 'BEGIN { printf "%.1f", (b - a) / 1000 }')
			note "feedback: $LISTS_NAME down $(((t_up - t_down) / 1000))s; $retry gone ${secs}s after it was back (${FB_SECONDS_3}s after the report)"
			# The worker moves the job to done/ once the command returned.
			for ((i = 0; i < 50; i++)); do
				(($(fb_pending) == 0)) && break
				sleep 0.1
			done
			(($(fb_pending) == 0)) || err "jobs left in the queue 5s after $retry was removed: $(fb_pending)"
		else
			err "$retry still a member ${FB_WAIT}s after $LISTS_NAME came back; worker log: $(tail -n 3 "$LW_IT_DIR/feedback-worker.log" | tr '\n' '|')"
		fi
	else
		lm_up
		err "report 3 was not queued by Postfix: $qid"
	fi
	lm_is_member "$FB_LIST" "$forged_for" || err "$forged_for was removed (only a forged report named it)"
	if declare -F lm_feedback_more >/dev/null; then lm_feedback_more "$removed" "$forged_for" "$retry"; fi
	fb_worker_stop
	grep -c 'complaint handled' "$LW_IT_DIR/feedback-worker.log" >/dev/null ||
		err "the worker logged no handled complaint"
	scn_end
}

# --- One-click unsubscribe (RFC 8058) ------------------------------------------------
#
# scn_oneclick: a member posts to a list that sends one copy per member
# (VERP). listwarden gives each copy `List-Unsubscribe: <https://...
# /unsubscribe?list=...&m=...&t=...>, <mailto:...>` naming that member,
# `List-Unsubscribe-Post: List-Unsubscribe=One-Click` and a Feedback-ID;
# opendkim signs them after it and every copy verifies with dkimpy, both
# fields in h=. Then, as a mailbox provider would, a POST of one member's
# URL (body List-Unsubscribe=One-Click) to listwarden's endpoint: the
# feedback worker removes that member through the list manager within
# FB_WAIT s, and nobody else; the same POST again is answered 200 and
# queues nothing; a tampered token is refused (403) and removes nobody.
#
# The runner sets:
#   UNSUB_LIST      the list's address
#   UNSUB_POSTER    a member who posts (no moderation)
#   UNSUB_MEMBERS   every member of UNSUB_LIST (each gets a copy)
#   UNSUB_LEAVER    the member whose URL is POSTed
#   UNSUB_TAMPERED  the member whose URL is POSTed with a tampered token
#   UNSUB_ENDPOINT  listwarden's endpoint, http://127.0.0.1:PORT (the URL's
#                path and query are sent there, as a TLS proxy would)

UNSUB_SECONDS=""
declare -A UNSUB_URL=()

# "LIST MEMBER TOKEN" from the query of URL $1, percent-decoded.
unsub_query() {
	"$LW_IT_PYTHON" -c 'import sys, urllib.parse as p
q = p.parse_qs(p.urlsplit(sys.argv[1]).query)
print(*(q.get(k, ["-"])[0] for k in ("list", "m", "t")))' "$1"
}

# URL $1 with one character of its t= value changed (same length).
unsub_tamper() {
	"$LW_IT_PYTHON" -c 'import sys, urllib.parse as p
u = p.urlsplit(sys.argv[1])
q = p.parse_qsl(u.query, keep_blank_values=True)
q = [(k, (("B" if v[0] == "A" else "A") + v[1:]) if k == "t" and v else v) for k, v in q]
print(p.urlunsplit(u._replace(query=p.urlencode(q, safe="@"))))' "$1"
}

# POSTs the one-click body to the endpoint for URL $1; prints the HTTP
# status (000: no answer). The body goes to $LW_IT_DIR/oneclick.body.
unsub_post() {
	local path=/${1#https://*/}
	curl -s -o "$LW_IT_DIR/oneclick.body" -w '%{http_code}' --max-time 10 -X POST \
		-H 'Content-Type: application/x-www-form-urlencoded' --data-raw 'List-Unsubscribe=One-Click' \
		"$UNSUB_ENDPOINT$path" || true
}

# Feedback jobs ever queued (waiting, done or bad: the worker keeps them).
unsub_jobs() { find "$FB_QUEUE" -type f -name '*.json' 2>/dev/null | wc -l; }

# Errs for each member of UNSUB_MEMBERS other than those in $@ that is gone.
unsub_others_stay() {
	local m skip x
	for m in "${UNSUB_MEMBERS[@]}"; do
		skip=0
		for x in "$@"; do [[ $m == "$x" ]] && skip=1; done
		((skip)) || lm_is_member "$UNSUB_LIST" "$m" || err "$m is no longer a member of $UNSUB_LIST"
	done
}

scn_oneclick() {
	scn_begin one-click
	local token eml out want got files f i rcpt lu lup fid u q list m t code secs t0 jobs tampered n=0 offset line
	local mailto_re="^<https://[^>]+>[[:space:]]*,[[:space:]]*<mailto:[^>]*@${UNSUB_LIST#*@}[^>]*>\$"
	local post_re='^List-Unsubscribe-Post:[[:space:]]*List-Unsubscribe=One-Click[[:space:]]*$'
	token=lwoc-$RUN_ID
	eml=$LW_IT_DIR/msgs/oneclick-post.eml
	cat >"$eml" <<-MSG
		From: <$UNSUB_POSTER>
		To: <$UNSUB_LIST>
		Subject: one-click post $token
		Date: $(LC_ALL=C date -R)
		Message-ID: <$token@${UNSUB_POSTER#*@}>
		MIME-Version: 1.0
		Content-Type: text/plain; charset=us-ascii

		A post whose copies carry one-click unsubscribe links ($token).
	MSG
	out=$(smtp_send 203.0.113.52 "mx.${UNSUB_POSTER#*@}" "$UNSUB_POSTER" "$UNSUB_LIST" "${eml%.eml}.swaks" "$eml")
	if ! queued_id "$out" >/dev/null; then
		err "the post to $UNSUB_LIST was not queued: $out"
		scn_end
		return
	fi
	want=$(printf '%s\n' "${UNSUB_MEMBERS[@]}" | tr '[:upper:]' '[:lower:]' | sort -u)
	got=""
	for ((i = 0; i < LISTS_WAIT_TENTHS; i++)); do
		files=$(scn_sink_files "$token")
		if [[ -n $files ]]; then
			# shellcheck disable=SC2086 # one file name per word
			got=$(for f in $files; do sink_rcpts "$f"; done | sort -u)
			[[ $got == "$want" ]] && break
		fi
		sleep 0.1
	done
	sleep 0.2
	if [[ $got != "$want" ]]; then
		err "copies for [$(tr '\n' ' ' <<<"$got")], expected [$(tr '\n' ' ' <<<"$want")]"
		scn_end
		return
	fi
	# Each copy: one List-Unsubscribe, its https URL first and naming the
	# copy's member, the list manager's mailto after it; the Post field; a
	# Feedback-ID.
	UNSUB_URL=()
	for f in $files; do
		rcpt=$(sink_rcpts "$f")
		if [[ $(wc -l <<<"$rcpt") != 1 ]]; then
			err "a copy has several recipients: $(tr '\n' ' ' <<<"$rcpt")"
			continue
		fi
		n=$((n + 1))
		lu=$(sink_header "$f" List-Unsubscribe:)
		lup=$(sink_header "$f" List-Unsubscribe-Post:)
		fid=$(sink_header "$f" Feedback-ID:)
		[[ $(grep -c . <<<"$lu") == 1 ]] || err "copy for $rcpt: $(grep -c . <<<"$lu") List-Unsubscribe fields"
		u=$(grep -oiE '^List-Unsubscribe:[[:space:]]*<https://[^>]+>' <<<"$lu" | head -n 1 | sed -E 's/^[^<]*<//; s/>$//')
		if [[ -z $u ]]; then
			err "copy for $rcpt: List-Unsubscribe does not start with an https URL: $lu"
			continue
		fi
		[[ $(sed -E 's/^[^:]*:[[:space:]]*//' <<<"$lu") =~ $mailto_re ]] ||
			err "copy for $rcpt: not <https URL>, <the list manager's mailto>: $lu"
		[[ $lup =~ $post_re ]] ||
			err "copy for $rcpt: List-Unsubscribe-Post is '$lup'"
		[[ -n $fid ]] || err "copy for $rcpt: no Feedback-ID"
		q=$(unsub_query "$u")
		read -r list m t <<<"$q"
		[[ ${m,,} == "$rcpt" && $t != - && $list != - ]] || err "copy for $rcpt: the URL names list=$list m=$m t=$t"
		[[ ${UNSUB_URL[$rcpt]:-} == "" ]] || err "two copies for $rcpt"
		UNSUB_URL[$rcpt]=$u
	done
	say "  one-click: $n copies; e.g. $(sink_header "$(head -n 1 <<<"$files")" List-Unsubscribe: | cut -c 1-200)"
	# shellcheck disable=SC2086 # one file name per word
	lists_dkim_check one-click $files
	((${DKIM_PRESENT[list-unsubscribe-post]:-0} == n && ${DKIM_PRESENT[feedback-id]:-0} == n)) ||
		err "signed copies with List-Unsubscribe-Post: ${DKIM_PRESENT[list-unsubscribe-post]:-0}, with Feedback-ID: ${DKIM_PRESENT[feedback-id]:-0}, of $n"
	if [[ -z ${UNSUB_URL[$UNSUB_LEAVER]:-} || -z ${UNSUB_URL[$UNSUB_TAMPERED]:-} ]]; then
		err "no URL for $UNSUB_LEAVER or $UNSUB_TAMPERED"
		scn_end
		return
	fi
	fb_worker_start
	# 1. The provider's POST: the member leaves, nobody else.
	t0=$(now_ms)
	code=$(unsub_post "${UNSUB_URL[$UNSUB_LEAVER]}")
	[[ $code == 200 || $code == 202 || $code == 204 ]] ||
		err "POST of $UNSUB_LEAVER's URL: HTTP $code $(head -c 200 "$LW_IT_DIR/oneclick.body" 2>/dev/null | tr '\n' ' ')"
	if secs=$(fb_wait_gone "$UNSUB_LEAVER" "$FB_WAIT"); then
		UNSUB_SECONDS=$(awk -v a="$t0" -v b="$(now_ms)" 'BEGIN { printf "%.1f", (b - a) / 1000 }')
		note "one-click: POST answered $code -> $UNSUB_LEAVER gone from $UNSUB_LIST in ${UNSUB_SECONDS}s"
		if declare -F lm_check_removed >/dev/null; then lm_check_removed "$UNSUB_LEAVER"; fi
	else
		err "$UNSUB_LEAVER is still a member ${FB_WAIT}s after the POST (HTTP $code); worker log: $(tail -n 3 "$LW_IT_DIR/feedback-worker.log" | tr '\n' '|')"
	fi
	unsub_others_stay "$UNSUB_LEAVER"
	# 2. The same POST again (providers retry): 200, no new job.
	jobs=$(unsub_jobs)
	offset=$(scn_file_size "$LW_LOG")
	code=$(unsub_post "${UNSUB_URL[$UNSUB_LEAVER]}")
	[[ $code == 200 ]] || err "the second POST of $UNSUB_LEAVER's URL: HTTP $code (want 200)"
	sleep 3
	(($(unsub_jobs) == jobs)) || err "the second POST queued $(($(unsub_jobs) - jobs)) more job(s)"
	line=$(lines_after "$LW_LOG" "$offset" "one-click unsubscribe" | tr -d '"' | tail -n 1)
	[[ $line == *"member=$UNSUB_LEAVER queued=false"* ]] ||
		err "listwarden's log for the second POST: '${line:-nothing}' (want queued=false)"
	unsub_others_stay "$UNSUB_LEAVER"
	# 3. A tampered token: 403, no job, nobody leaves.
	tampered=$(unsub_tamper "${UNSUB_URL[$UNSUB_TAMPERED]}")
	[[ $tampered != "${UNSUB_URL[$UNSUB_TAMPERED]}" ]] || err "unsub_tamper changed nothing"
	jobs=$(unsub_jobs)
	code=$(unsub_post "$tampered")
	[[ $code == 403 ]] || err "POST with a tampered token for $UNSUB_TAMPERED: HTTP $code (want 403)"
	sleep 3
	(($(unsub_jobs) == jobs)) || err "the tampered POST queued $(($(unsub_jobs) - jobs)) job(s)"
	unsub_others_stay "$UNSUB_LEAVER"
	fb_worker_stop
	note "one-click: $n copies, each with both fields and its member's URL; repeat POST 200, tampered 403"
	scn_end
}
