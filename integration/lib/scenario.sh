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

# Parsed scenario (reset by scn_parse).
SCN_CLIENT="" SCN_CLIENT_NAME="" SCN_LOGIN="" SCN_HELO="" SCN_MAIL_FROM=""
SCN_RCPT=() SCN_HEADERS=() SCN_BODY=()
SCN_EXPECT_STAGE="" SCN_EXPECT_REPLY="" SCN_EXPECT_SINK=""
SCN_SINK_HEADERS=() SCN_SINK_NO_HEADERS=() SCN_UNCHANGED=""
SCN_ERRORS=() # reasons the current scenario failed
SCN_PLAYED=0  # 1 once the scenario's SMTP session has run

scn_fail() { SCN_ERRORS+=("$*"); }

# Parses scenario file $1 into the SCN_* variables; problems go to SCN_ERRORS.
scn_parse() {
	local file=$1 line key value n=0 rcpt
	SCN_CLIENT=$SCN_DIRECT_CLIENT SCN_CLIENT_NAME="[UNAVAILABLE]" SCN_LOGIN=""
	SCN_HELO=mail.example.net SCN_MAIL_FROM=""
	SCN_RCPT=() SCN_HEADERS=() SCN_BODY=()
	SCN_EXPECT_STAGE="" SCN_EXPECT_REPLY="" SCN_EXPECT_SINK=""
	SCN_SINK_HEADERS=() SCN_SINK_NO_HEADERS=() SCN_UNCHANGED=no
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
		client) SCN_CLIENT=$value ;;
		client_name) SCN_CLIENT_NAME=$value ;;
		login) SCN_LOGIN=$value ;;
		helo) SCN_HELO=$value ;;
		mail_from) SCN_MAIL_FROM=$value ;;
		rcpt_to)
			IFS=', ' read -r -a rcpt <<<"$value"
			SCN_RCPT+=("${rcpt[@]}")
			;;
		header) SCN_HEADERS+=("$value") ;;
		body) SCN_BODY+=("$value") ;;
		expect_stage) SCN_EXPECT_STAGE=$value ;;
		expect_reply) SCN_EXPECT_REPLY=$value ;;
		expect_sink) SCN_EXPECT_SINK=$value ;;
		expect_sink_header) SCN_SINK_HEADERS+=("$value") ;;
		expect_sink_no_header) SCN_SINK_NO_HEADERS+=("$value") ;;
		expect_sink_unchanged) SCN_UNCHANGED=$value ;;
		*) scn_fail "line $n: unknown key '$key'" ;;
		esac
	done <"$file"
	[[ -n $SCN_MAIL_FROM ]] || scn_fail "mail_from is required (use <> for the null sender)"
	((${#SCN_RCPT[@]} > 0)) || scn_fail "rcpt_to is required"
	[[ $SCN_EXPECT_STAGE =~ ^(connect|helo|mail|rcpt|data)$ ]] ||
		scn_fail "expect_stage must be connect, helo, mail, rcpt or data"
	[[ $SCN_EXPECT_REPLY =~ ^[245][0-9][0-9] ]] || scn_fail "expect_reply must start with a reply code"
	[[ $SCN_EXPECT_SINK =~ ^(yes|no)$ ]] || scn_fail "expect_sink must be yes or no"
	[[ $SCN_UNCHANGED =~ ^(yes|no)$ ]] || scn_fail "expect_sink_unchanged must be yes or no"
	if [[ $SCN_EXPECT_SINK == no ]] && {
		((${#SCN_SINK_HEADERS[@]} + ${#SCN_SINK_NO_HEADERS[@]} > 0)) || [[ $SCN_UNCHANGED == yes ]]
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
	return 0
}

# Plays scenario file $1 and checks it. Prints nothing; fills SCN_ERRORS.
scn_run() {
	local file=$1 name token transcript outcome stage reply qid rc=0 args=()
	name=$(basename "$file" .scn)
	SCN_ERRORS=()
	SCN_PLAYED=0
	scn_parse "$file"
	((${#SCN_ERRORS[@]} == 0)) || return 0
	token="lwit-$LW_IT_RUN_ID-$name"
	mkdir -p "$LW_IT_DIR/scenarios"
	transcript=$LW_IT_DIR/scenarios/$name.swaks
	scn_message "$token" >"$LW_IT_DIR/scenarios/$token.eml"

	args=(--server "127.0.0.1" --port "$SMTPD_PORT" --timeout "$SCN_SWAKS_TIMEOUT"
		--helo "$SCN_HELO" --from "$SCN_MAIL_FROM" --to "$(
			IFS=,
			echo "${SCN_RCPT[*]}"
		)" --data -)
	if [[ $SCN_CLIENT != "$SCN_DIRECT_CLIENT" ]]; then
		args+=(--xclient-addr "$SCN_CLIENT" --xclient-name "$SCN_CLIENT_NAME")
		[[ -z $SCN_LOGIN ]] || args+=(--xclient-login "$SCN_LOGIN")
	elif [[ -n $SCN_LOGIN ]]; then
		args+=(--xclient-login "$SCN_LOGIN")
	fi
	# swaks ends the data with CRLF . CRLF itself: feed it the message without
	# its last newline, or the body would grow an empty line.
	swaks "${args[@]}" < <(head -c -1 "$LW_IT_DIR/scenarios/$token.eml") >"$transcript" 2>&1 || rc=$?
	# shellcheck disable=SC2034 # read by integration/run
	SCN_PLAYED=1
	# 0: all accepted; 2x: a reply was negative; 6: the server hung up (a
	# 421, say). The transcript says which. Anything else (usage, cannot
	# connect, prerequisites) is a harness problem.
	if ((rc != 0 && rc != 6 && (rc < 20 || rc > 29))); then
		scn_fail "swaks exited with $rc: $(tail -n 3 "$transcript" | tr '\n' '|')"
		return 0
	fi
	outcome=$(scn_outcome <"$transcript")
	stage=${outcome%%$'\t'*}
	reply=${outcome#*$'\t'}
	[[ $stage == "$SCN_EXPECT_STAGE" && $reply == "$SCN_EXPECT_REPLY"* ]] ||
		scn_fail "expected '$SCN_EXPECT_REPLY' at $SCN_EXPECT_STAGE, got '$reply' at $stage"
	qid=""
	if [[ $stage == data && $reply =~ queued\ as\ ([0-9A-Za-z]+) ]]; then
		qid=${BASH_REMATCH[1]}
	fi
	scn_check_sink "$token" "$qid"
}
