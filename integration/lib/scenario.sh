# shellcheck shell=bash
# Scenario files (integration/scenarios/*.scn): parse, play through Postfix
# with swaks, and check the SMTP reply and what reached smtp-sink.
# The format is documented in integration/README.md.

# Bounds on what one scenario file may hold, so a broken file fails clearly.
SCN_MAX_LINES=500
# The trusted client: played directly, without XCLIENT.
SCN_DIRECT_CLIENT=127.0.0.1
# Seconds swaks waits for each server reply.
SCN_SWAKS_TIMEOUT=15
# Seconds a sendmail(1) injection may take.
SCN_SENDMAIL_TIMEOUT=15
# Most lines a body_file may add.
SCN_MAX_BODY_FILE_LINES=2000
# How long an expected log line may lag behind the SMTP reply, in tenths.
SCN_LOG_WAIT_TENTHS=30

# Parsed scenario (reset by scn_parse).
SCN_INJECT="" SCN_CLIENT="" SCN_CLIENT_NAME="" SCN_LOGIN="" SCN_HELO="" SCN_MAIL_FROM=""
SCN_RCPT=()      # recipients as given, or (kind != plain) the address to tag
SCN_RCPT_KIND=() # per recipient: plain, signed, forged or expired
SCN_HEADERS=() SCN_BODY=()
SCN_EXPECT_STAGE="" SCN_EXPECT_REPLY="" SCN_EXPECT_SINK=""
SCN_SINK_HEADERS=() SCN_SINK_NO_HEADERS=() SCN_UNCHANGED=""
SCN_SINK_RCPTS=() SCN_SINK_MAIL_FROM="" SCN_SINK_MAIL_FROM_PREFIX="" SCN_SINK_MAIL_FROM_VERIFY=""
SCN_PF_LOG=() SCN_LW_LOG=() SCN_METRICS=() SCN_QUEUE_EMPTY=""
SCN_ERRORS=() # reasons the current scenario failed
SCN_PLAYED=0  # 1 once the scenario's message was sent
# Every expect_metric of every played scenario, for the run's metrics check.
SCN_ALL_METRICS=()

scn_fail() { SCN_ERRORS+=("$*"); }

# Adds recipients $2 (comma- or space-separated) of kind $1.
scn_add_rcpts() {
	local kind=$1 rcpt a
	IFS=', ' read -r -a rcpt <<<"$2"
	for a in "${rcpt[@]}"; do
		SCN_RCPT+=("$a")
		SCN_RCPT_KIND+=("$kind")
	done
}

# Appends the lines of body file $1 (relative to the scenarios directory,
# normally data/NAME) to the body.
scn_add_body_file() {
	local rel=$1 path line n=0
	path=$LW_IT_HOME/scenarios/$rel
	if [[ $rel == /* || $rel == *..* || ! -f $path ]]; then
		scn_fail "body_file: no file scenarios/$rel (give a path below integration/scenarios/)"
		return 0
	fi
	while IFS= read -r line || [[ -n $line ]]; do
		n=$((n + 1))
		if ((n > SCN_MAX_BODY_FILE_LINES)); then
			scn_fail "body_file $rel: more than $SCN_MAX_BODY_FILE_LINES lines"
			return 0
		fi
		SCN_BODY+=("${line%$'\r'}")
	done <"$path"
}

# Parses scenario file $1 into the SCN_* variables; problems go to SCN_ERRORS.
scn_parse() {
	local file=$1 line key value n=0 list=()
	SCN_INJECT=smtp SCN_CLIENT=$SCN_DIRECT_CLIENT SCN_CLIENT_NAME="[UNAVAILABLE]" SCN_LOGIN=""
	SCN_HELO=mail.example.net SCN_MAIL_FROM=""
	SCN_RCPT=() SCN_RCPT_KIND=() SCN_HEADERS=() SCN_BODY=()
	SCN_EXPECT_STAGE="" SCN_EXPECT_REPLY="" SCN_EXPECT_SINK=""
	SCN_SINK_HEADERS=() SCN_SINK_NO_HEADERS=() SCN_UNCHANGED=no
	SCN_SINK_RCPTS=() SCN_SINK_MAIL_FROM="" SCN_SINK_MAIL_FROM_PREFIX="" SCN_SINK_MAIL_FROM_VERIFY=""
	SCN_PF_LOG=() SCN_LW_LOG=() SCN_METRICS=() SCN_QUEUE_EMPTY=no
	while IFS= read -r line || [[ -n $line ]]; do
		n=$((n + 1))
		if ((n > SCN_MAX_LINES)); then
			scn_fail "more than $SCN_MAX_LINES lines"
			return
		fi
		line=${line%$'\r'}
		[[ $line =~ ^[[:space:]]*(#|$) ]] && continue
		if [[ ! $line =~ ^([a-z_]+):(.*)$ ]]; then
			scn_fail "line $n: expected 'key: value', got: $line"
			continue
		fi
		key=${BASH_REMATCH[1]}
		value=${BASH_REMATCH[2]}
		value=${value# } # one separating space; the rest is kept
		case $key in
		description) ;;
		inject) SCN_INJECT=$value ;;
		client) SCN_CLIENT=$value ;;
		client_name) SCN_CLIENT_NAME=$value ;;
		login) SCN_LOGIN=$value ;;
		helo) SCN_HELO=$value ;;
		mail_from) SCN_MAIL_FROM=$value ;;
		rcpt_to) scn_add_rcpts plain "$value" ;;
		rcpt_to_signed) scn_add_rcpts signed "$value" ;;
		rcpt_to_forged) scn_add_rcpts forged "$value" ;;
		rcpt_to_expired) scn_add_rcpts expired "$value" ;;
		header) SCN_HEADERS+=("$value") ;;
		body) SCN_BODY+=("$value") ;;
		body_file) scn_add_body_file "$value" ;;
		expect_stage) SCN_EXPECT_STAGE=$value ;;
		expect_reply) SCN_EXPECT_REPLY=$value ;;
		expect_sink) SCN_EXPECT_SINK=$value ;;
		expect_sink_header) SCN_SINK_HEADERS+=("$value") ;;
		expect_sink_no_header) SCN_SINK_NO_HEADERS+=("$value") ;;
		expect_sink_unchanged) SCN_UNCHANGED=$value ;;
		expect_sink_rcpt)
			IFS=', ' read -r -a list <<<"$value"
			SCN_SINK_RCPTS+=("${list[@]}")
			;;
		expect_sink_mail_from) SCN_SINK_MAIL_FROM=$value ;;
		expect_sink_mail_from_prefix) SCN_SINK_MAIL_FROM_PREFIX=$value ;;
		expect_sink_mail_from_verify) SCN_SINK_MAIL_FROM_VERIFY=$value ;;
		expect_postfix_log) SCN_PF_LOG+=("$value") ;;
		expect_listwarden_log) SCN_LW_LOG+=("$value") ;;
		expect_metric) SCN_METRICS+=("$value") ;;
		expect_queue_empty) SCN_QUEUE_EMPTY=$value ;;
		*) scn_fail "line $n: unknown key '$key'" ;;
		esac
	done <"$file"
	scn_validate
}

# Checks the parsed scenario for missing or contradictory keys.
scn_validate() {
	local m metric_re='^[a-z_]+( +[a-z_]+="[^" ]*")*$'
	[[ -n $SCN_MAIL_FROM ]] || scn_fail "mail_from is required (use <> for the null sender)"
	((${#SCN_RCPT[@]} > 0)) || scn_fail "rcpt_to (or rcpt_to_signed/_forged/_expired) is required"
	case $SCN_INJECT in
	smtp)
		[[ $SCN_EXPECT_STAGE =~ ^(connect|helo|mail|rcpt|data)$ ]] ||
			scn_fail "expect_stage must be connect, helo, mail, rcpt or data"
		[[ $SCN_EXPECT_REPLY =~ ^[245][0-9][0-9] ]] || scn_fail "expect_reply must start with a reply code"
		;;
	sendmail)
		# There is no SMTP session: the client is the local submission.
		[[ -z $SCN_EXPECT_STAGE && -z $SCN_EXPECT_REPLY ]] ||
			scn_fail "inject: sendmail has no SMTP replies; drop expect_stage and expect_reply"
		[[ $SCN_CLIENT == "$SCN_DIRECT_CLIENT" && -z $SCN_LOGIN ]] ||
			scn_fail "inject: sendmail cannot set client or login"
		[[ $SCN_MAIL_FROM != "<>" ]] || scn_fail "inject: sendmail needs a real mail_from"
		;;
	*) scn_fail "inject must be smtp or sendmail" ;;
	esac
	[[ $SCN_EXPECT_SINK =~ ^(yes|no)$ ]] || scn_fail "expect_sink must be yes or no"
	[[ $SCN_UNCHANGED =~ ^(yes|no)$ ]] || scn_fail "expect_sink_unchanged must be yes or no"
	[[ $SCN_QUEUE_EMPTY =~ ^(yes|no)$ ]] || scn_fail "expect_queue_empty must be yes or no"
	[[ -z $SCN_SINK_MAIL_FROM_VERIFY || $SCN_SINK_MAIL_FROM_VERIFY =~ ^(valid|invalid|expired|unsigned)$ ]] ||
		scn_fail "expect_sink_mail_from_verify must be valid, invalid, expired or unsigned"
	for m in "${SCN_METRICS[@]}"; do
		[[ $m =~ $metric_re ]] ||
			scn_fail "expect_metric: '$m' is not 'metric_name label=\"value\" ...'"
	done
	if [[ $SCN_EXPECT_SINK == no ]] && {
		((${#SCN_SINK_HEADERS[@]} + ${#SCN_SINK_NO_HEADERS[@]} + ${#SCN_SINK_RCPTS[@]} > 0)) ||
			[[ $SCN_UNCHANGED == yes || -n $SCN_SINK_MAIL_FROM$SCN_SINK_MAIL_FROM_PREFIX$SCN_SINK_MAIL_FROM_VERIFY ]]
	}; then
		scn_fail "expect_sink_* checks need expect_sink: yes"
	fi
	return 0
}

# True when the scenario's headers already contain header name $1.
scn_has_header() {
	local h
	for h in "${SCN_HEADERS[@]}"; do
		[[ ${h,,} == "${1,,}:"* ]] && return 0
	done
	return 1
}

# Writes the message (headers, blank line, body) for token $1 to stdout.
# {token} in headers and body is replaced by the token; Message-ID and Date
# are added when the scenario does not set them, so every run is unique.
scn_message() {
	local token=$1 h
	scn_has_header Message-ID || printf 'Message-ID: <%s@lw-it.test>\n' "$token"
	scn_has_header Date || printf 'Date: %s\n' "$(LC_ALL=C date -R)"
	for h in "${SCN_HEADERS[@]}"; do
		printf '%s\n' "${h//\{token\}/$token}"
	done
	printf '\n'
	for h in "${SCN_BODY[@]}"; do
		printf '%s\n' "${h//\{token\}/$token}"
	done
}

# Reads a swaks transcript on stdin and prints "stage<TAB>reply": the first
# stage whose reply is not positive, or "data<TAB>final reply" when all were.
# A reply is the last line of a (possibly multi-line) server answer.
scn_outcome() {
	awk '
		function note(stage, reply) { if (!(stage in seen)) { order[++n] = stage; seen[stage] = 1 } last[stage] = reply }
		BEGIN { stage = "connect"; indata = 0 }
		/^ -> / {
			cmd = substr($0, 5)
			if (indata) { if (cmd == ".") { stage = "dot"; indata = 0 } ; next }
			u = toupper(cmd)
			if (u ~ /^(EHLO|HELO)( |$)/) stage = "helo"
			else if (u ~ /^XCLIENT( |$)/) stage = "xclient"
			else if (u ~ /^MAIL /) stage = "mail"
			else if (u ~ /^RCPT /) stage = "rcpt"
			else if (u ~ /^DATA$/) stage = "datacmd"
			else if (u ~ /^QUIT$/) stage = "quit"
			else stage = "other"
			next
		}
		/^<(-|\*\*) / {
			reply = $0; sub(/^<(-|\*\*) +/, "", reply)
			if (reply !~ /^[0-9][0-9][0-9]/) next          # e.g. "Timeout ..."
			if (substr(reply, 4, 1) == "-") next          # not the last line yet
			if (stage == "datacmd" && reply ~ /^354/) indata = 1
			note(stage, reply)
			if (reply ~ /^[45]/ && first == "") { first = stage; firstreply = reply }
		}
		END {
			map["connect"] = "connect"; map["helo"] = "helo"; map["xclient"] = "helo"
			map["mail"] = "mail"; map["rcpt"] = "rcpt"; map["datacmd"] = "data"; map["dot"] = "data"
			map["quit"] = "quit"; map["other"] = "other"
			if (first != "") { printf "%s\t%s\n", map[first], firstreply; exit }
			if ("dot" in last) { printf "data\t%s\n", last["dot"]; exit }
			printf "none\tno reply to the end of data\n"
		}'
}

# Files in the sink that contain token $1.
scn_sink_files() {
	grep -rlF -- "$1" "$SINK_DIR" 2>/dev/null || true
}

# The message as smtp-sink stored it, without smtp-sink's own X-* records
# and its Received header, and (with $2 = 2) without Postfix's Received too.
scn_sink_message() {
	awk -v strip="${2:-1}" '
		BEGIN { inhdr = 1; skipping = 0; received = 0 }
		inhdr && /^(X-Client-Addr|X-Client-Proto|X-Helo-Args|X-Mail-Args|X-Rcpt-Args):/ { next }
		inhdr && skipping && /^[ \t]/ { next }
		{ skipping = 0 }
		inhdr && received < strip && /^Received:/ { received++; skipping = 1; next }
		inhdr && /^$/ { inhdr = 0 }
		{ print }' "$1"
}

# The header section of the message in sink file $1 (as Postfix delivered
# it), one header per line with folded lines joined.
scn_sink_headers() {
	scn_sink_message "$1" 1 | awk '
		/^$/ { exit }
		/^[ \t]/ { h = h " " $0; next }
		{ if (h != "") print h; h = $0 }
		END { if (h != "") print h }'
}

# True when some line of $2 starts with $1, ignoring case.
scn_has_line_prefix() {
	awk -v p="$1" 'index(tolower($0), tolower(p)) == 1 { found = 1; exit } END { exit !found }' <<<"$2"
}

# The envelope smtp-sink recorded in dump files $@ (its X-Mail-Args and
# X-Rcpt-Args records, which come before its Received: header), one line
# each: "mail ADDRESS" and "rcpt ADDRESS", without the angle brackets.
scn_sink_envelope() {
	awk '
		FNR == 1 { records = 1 }
		records && /^Received:/ { records = 0 }
		records && /^X-(Mail|Rcpt)-Args:/ {
			a = $2; sub(/^</, "", a); sub(/>$/, "", a)
			print (/^X-Mail/ ? "mail " : "rcpt ") a
		}' "$@"
}

# Checks the envelope the sink saw in dump files $@ against expect_sink_rcpt
# and expect_sink_mail_from*.
scn_check_envelope() {
	local envelope sender got want out rc=0
	envelope=$(scn_sink_envelope "$@")
	if ((${#SCN_SINK_RCPTS[@]} > 0)); then
		got=$(awk '$1 == "rcpt" { print tolower($2) }' <<<"$envelope" | sort -u | tr '\n' ' ')
		want=$(printf '%s\n' "${SCN_SINK_RCPTS[@]}" | tr '[:upper:]' '[:lower:]' | sort -u | tr '\n' ' ')
		[[ $got == "$want" ]] || scn_fail "sink: recipients are '${got% }', expected '${want% }'"
	fi
	sender=$(awk '$1 == "mail" { print $2; exit }' <<<"$envelope")
	if [[ -n $SCN_SINK_MAIL_FROM && ${sender,,} != "${SCN_SINK_MAIL_FROM,,}" ]]; then
		scn_fail "sink: MAIL FROM is <$sender>, expected <$SCN_SINK_MAIL_FROM>"
	fi
	if [[ -n $SCN_SINK_MAIL_FROM_PREFIX && ${sender,,} != "${SCN_SINK_MAIL_FROM_PREFIX,,}"* ]]; then
		scn_fail "sink: MAIL FROM <$sender> does not start with '$SCN_SINK_MAIL_FROM_PREFIX'"
	fi
	if [[ -n $SCN_SINK_MAIL_FROM_VERIFY ]]; then
		out=$("$LW_BIN" verify -c "$LW_CONFIG" "$sender" 2>/dev/null) || rc=$?
		if [[ ${out%% *} != "$SCN_SINK_MAIL_FROM_VERIFY" ]]; then
			scn_fail "sink: listwarden verify <$sender> says '$out', expected $SCN_SINK_MAIL_FROM_VERIFY"
		elif [[ $SCN_SINK_MAIL_FROM_VERIFY == valid && $rc != 0 ]] ||
			[[ $SCN_SINK_MAIL_FROM_VERIFY != valid && $rc == 0 ]]; then
			# verify must exit 0 exactly when the signature is valid.
			scn_fail "sink: listwarden verify <$sender> printed '$out' but exited $rc"
		fi
	fi
	return 0
}

# Checks what reached the sink for token $1 (queue ID $2, maybe empty).
scn_check_sink() {
	local token=$1 qid=$2 status files file expect got hdrs h
	if [[ -n $qid ]]; then
		status=$(pf_wait_delivery "$qid") || status=timeout
		[[ $SCN_EXPECT_SINK == no || $status == sent ]] ||
			scn_fail "queue $qid: delivery to the sink ended as '$status'"
	fi
	files=$(scn_sink_files "$token")
	if [[ $SCN_EXPECT_SINK == no ]]; then
		[[ -z $files ]] || scn_fail "the sink received the message but should not have: $files"
		return 0
	fi
	if [[ -z $files ]]; then
		scn_fail "the sink did not receive the message (token $token)"
		return 0
	fi
	file=$(head -n 1 <<<"$files")
	hdrs=$(scn_sink_headers "$file")
	for h in "${SCN_SINK_HEADERS[@]}"; do
		h=${h//\{token\}/$token}
		scn_has_line_prefix "$h" "$hdrs" || scn_fail "sink: no header starting with '$h'"
	done
	for h in "${SCN_SINK_NO_HEADERS[@]}"; do
		if scn_has_line_prefix "$h" "$hdrs"; then scn_fail "sink: unexpected header starting with '$h'"; fi
	done
	if [[ $SCN_UNCHANGED == yes ]]; then
		expect=$(tr -d '\r' <"$LW_IT_DIR/scenarios/$token.eml")
		got=$(scn_sink_message "$file" 2)
		if [[ $got != "$expect" ]]; then
			scn_fail "sink: message changed in transit: $(diff <(printf '%s\n' "$expect") <(printf '%s\n' "$got") | head -n 20 | tr '\n' '|')"
		fi
	fi
	local -a all_files
	mapfile -t all_files <<<"$files"
	scn_check_envelope "${all_files[@]}"
}

# Size of file $1 in bytes (0 when it does not exist yet).
scn_file_size() {
	stat -c %s -- "$1" 2>/dev/null || echo 0
}

# True once text $3 appears in file $1 after byte offset $2; waits a little,
# since Postfix logs through postlogd and the milter logs asynchronously.
scn_log_has() {
	local file=$1 offset=$2 text=$3 i
	for ((i = 0; i < SCN_LOG_WAIT_TENTHS; i++)); do
		tail -c +"$((offset + 1))" -- "$file" 2>/dev/null | grep -qF -- "$text" && return 0
		sleep 0.1
	done
	return 1
}

# Checks expect_postfix_log and expect_listwarden_log against the lines
# the logs gained since offsets $1 (Postfix) and $2 (listwarden).
scn_check_logs() {
	local pf_offset=$1 lw_offset=$2 text
	for text in "${SCN_PF_LOG[@]}"; do
		scn_log_has "$PF_LOG" "$pf_offset" "$text" || scn_fail "postfix log: no line with '$text'"
	done
	for text in "${SCN_LW_LOG[@]}"; do
		scn_log_has "$LW_LOG" "$lw_offset" "$text" || scn_fail "listwarden log: no line with '$text'"
	done
}

# Checks that every expect_metric sum grew between saved /metrics texts
# $1 (before the scenario) and $2 (after).
scn_check_metrics() {
	local before=$1 after=$2 spec metric b a
	local -a labels
	lw_fetch_metrics "$METRICS_PORT" "$after" || {
		scn_fail "GET /metrics failed after the scenario"
		return 0
	}
	for spec in "${SCN_METRICS[@]}"; do
		metric=${spec%% *}
		read -r -a labels <<<"${spec#"$metric"}"
		b=$(lw_metric_sum "$before" "$metric" "${labels[@]}")
		a=$(lw_metric_sum "$after" "$metric" "${labels[@]}")
		awk -v a="$a" -v b="$b" 'BEGIN { exit !(a > b) }' ||
			scn_fail "metric $spec did not grow (before $b, after $a)"
	done
}

# The recipients to send, with rcpt_to_signed/_forged/_expired turned into
# tagged addresses: signed by `listwarden sign`, forged by changing one
# digit of such a tag, expired by lib/prvs.py (signed 20 days ago).
SCN_RCPT_SENT=()
scn_resolve_rcpts() {
	local i addr kind tagged validity
	SCN_RCPT_SENT=()
	validity=$(lw_validity_days)
	for i in "${!SCN_RCPT[@]}"; do
		addr=${SCN_RCPT[$i]} kind=${SCN_RCPT_KIND[$i]} tagged=""
		case $kind in
		plain) tagged=$addr ;;
		signed | forged)
			tagged=$("$LW_BIN" sign -c "$LW_CONFIG" "$addr" 2>/dev/null) || tagged=""
			if [[ $kind == forged && -n $tagged ]]; then
				tagged=$("$LW_IT_PYTHON" "$LW_IT_HOME/lib/prvs.py" forge "$tagged") || tagged=""
			fi
			;;
		expired)
			tagged=$("$LW_IT_PYTHON" "$LW_IT_HOME/lib/prvs.py" sign "$LW_KEY_FILE" "$addr" \
				--validity "$validity" --days-ago 20) || tagged=""
			;;
		esac
		if [[ $tagged != "$addr" && ${tagged,,} != prvs=* ]]; then
			scn_fail "could not make a $kind address from $addr (got '$tagged')"
			return 1
		fi
		SCN_RCPT_SENT+=("$tagged")
	done
}

# Sends the message $2 with swaks, transcript to $3; checks the reply.
# Sets SCN_QID when Postfix queued the message. Returns 1 when swaks itself
# failed (a harness problem, already in SCN_ERRORS).
SCN_QID=""
scn_play_smtp() {
	local eml=$1 transcript=$2 outcome stage reply rc=0 args=()
	args=(--server "127.0.0.1" --port "$SMTPD_PORT" --timeout "$SCN_SWAKS_TIMEOUT"
		--helo "$SCN_HELO" --from "$SCN_MAIL_FROM" --to "$(
			IFS=,
			echo "${SCN_RCPT_SENT[*]}"
		)" --data -)
	if [[ $SCN_CLIENT != "$SCN_DIRECT_CLIENT" ]]; then
		args+=(--xclient-addr "$SCN_CLIENT" --xclient-name "$SCN_CLIENT_NAME")
		[[ -z $SCN_LOGIN ]] || args+=(--xclient-login "$SCN_LOGIN")
	elif [[ -n $SCN_LOGIN ]]; then
		args+=(--xclient-login "$SCN_LOGIN")
	fi
	# swaks ends the data with CRLF . CRLF itself: feed it the message without
	# its last newline, or the body would grow an empty line.
	swaks "${args[@]}" < <(head -c -1 "$eml") >"$transcript" 2>&1 || rc=$?
	# 0: all accepted; 2x: a reply was negative; 6: the server hung up (a
	# 421, say). The transcript says which. Anything else (usage, cannot
	# connect, prerequisites) is a harness problem.
	if ((rc != 0 && rc != 6 && (rc < 20 || rc > 29))); then
		scn_fail "swaks exited with $rc: $(tail -n 3 "$transcript" | tr '\n' '|')"
		return 1
	fi
	outcome=$(scn_outcome <"$transcript")
	stage=${outcome%%$'\t'*}
	reply=${outcome#*$'\t'}
	[[ $stage == "$SCN_EXPECT_STAGE" && $reply == "$SCN_EXPECT_REPLY"* ]] ||
		scn_fail "expected '$SCN_EXPECT_REPLY' at $SCN_EXPECT_STAGE, got '$reply' at $stage"
	# Refused before DATA means the client never got to send the message:
	# swaks sends DATA only when some recipient was accepted.
	if [[ $SCN_EXPECT_STAGE != data ]] && grep -qE '^ -> DATA$' "$transcript"; then
		scn_fail "the client sent DATA, but the refusal was expected at $SCN_EXPECT_STAGE"
	fi
	if [[ $stage == data && $reply =~ queued\ as\ ([0-9A-Za-z]+) ]]; then
		SCN_QID=${BASH_REMATCH[1]}
	fi
	return 0
}

# Submits the message $2 with Postfix's sendmail(1) into the private
# instance (postdrop -> pickup -> cleanup, where non_smtpd_milters apply);
# output to $3. Sets SCN_QID from cleanup's message-id log line for token $1.
scn_play_sendmail() {
	local token=$1 eml=$2 out=$3 rc=0
	timeout "$SCN_SENDMAIL_TIMEOUT" sendmail -C "$PF_CONF" -i -f "$SCN_MAIL_FROM" -- \
		"${SCN_RCPT_SENT[@]}" <"$eml" >"$out" 2>&1 || rc=$?
	if ((rc != 0)); then
		scn_fail "sendmail exited with $rc: $(tail -n 3 "$out" | tr '\n' '|')"
		return 1
	fi
	if ! SCN_QID=$(pf_wait_queue_id "$token"); then
		SCN_QID=""
		scn_fail "Postfix did not pick up the submitted message (no cleanup log line with $token)"
		return 1
	fi
	return 0
}

# Plays scenario file $1 and checks it. Prints nothing; fills SCN_ERRORS.
scn_run() {
	local file=$1 name token eml pf_offset lw_offset metrics_before="" spec
	name=$(basename "$file" .scn)
	SCN_ERRORS=()
	SCN_PLAYED=0
	SCN_QID=""
	scn_parse "$file"
	((${#SCN_ERRORS[@]} == 0)) || return 0
	token="lwit-$LW_IT_RUN_ID-$name"
	mkdir -p "$LW_IT_DIR/scenarios"
	eml=$LW_IT_DIR/scenarios/$token.eml
	scn_message "$token" >"$eml"
	scn_resolve_rcpts || return 0
	pf_offset=$(scn_file_size "$PF_LOG")
	lw_offset=$(scn_file_size "$LW_LOG")
	if ((${#SCN_METRICS[@]} > 0)); then
		metrics_before=$LW_IT_DIR/scenarios/$name.metrics-before
		lw_fetch_metrics "$METRICS_PORT" "$metrics_before" || {
			scn_fail "GET /metrics failed before the scenario"
			return 0
		}
	fi

	# shellcheck disable=SC2034 # read by integration/run
	SCN_PLAYED=1
	for spec in "${SCN_METRICS[@]}"; do SCN_ALL_METRICS+=("$spec"); done
	case $SCN_INJECT in
	smtp) scn_play_smtp "$eml" "$LW_IT_DIR/scenarios/$name.swaks" || return 0 ;;
	sendmail) scn_play_sendmail "$token" "$eml" "$LW_IT_DIR/scenarios/$name.sendmail" || return 0 ;;
	esac

	scn_check_sink "$token" "$SCN_QID"
	scn_check_logs "$pf_offset" "$lw_offset"
	[[ -z $metrics_before ]] ||
		scn_check_metrics "$metrics_before" "$LW_IT_DIR/scenarios/$name.metrics-after"
	if [[ $SCN_QUEUE_EMPTY == yes ]] && ! pf_queue_empty >/dev/null; then
		scn_fail "the Postfix queue is not empty: $(pf_queue_empty | head -n 8 | tr '\n' '|')"
	fi
	return 0
}
