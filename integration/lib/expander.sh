# shellcheck shell=bash
# listwarden's thin list expander through the private Postfix (real pipe(8)
# transports, a real no-milter reinjection smtpd, real smtp-sink):
#
#   post ──▶ smtpd BASE+25 ──milter──▶ transport news@ ──▶ pipe `listwarden-expand pipe`
#                                                            │ one envelope per member,
#                                                            ▼ signed VERP sender
#            smtpd BASE+30 (opendkim only, expander.inject) ──▶ smtp ──▶ smtp-sink
#   bounce ─▶ smtpd BASE+25 ──milter (validates, tags)──▶ news-bounces@ ──▶ pipe `expand --bounces`
#
# exp_setup (after lw_write_config, before listwarden and Postfix start)
# writes the list's members file, adds the list and the `expander:` block to
# the test config, and adds the transport map, the pipe services and the
# reinjection listener to the private instance (the master.cf and main.cf
# lines shipped in packaging/postfix/). check_expander then plays a post to
# 1,000 members, a non-member post, a hard bounce, a Yahoo TS01 deferral,
# 30 days of fault=us bounces beside a genuine 5.1.1, a bounce storm, an
# ARF complaint, a one-click and a mailto unsubscribe, and reports one
# PASS/FAIL line each. Data templates: integration/scenarios-expander/.
# Uses SMTPD_PORT, SINK_DIR, PF_CONF, PF_LOG, LW_BIN,
# LW_CONFIG, LW_LOG, LW_KEY_FILE and LW_IT_DIR from the harness.
# shellcheck disable=SC2153

EXP_ENABLED=${LW_IT_EXPANDER:-1}   # 0 skips the expander's setup and checks
EXP_MEMBERS=${LW_IT_EXP_MEMBERS:-1000}
EXP_USER=${LW_IT_EXPAND_USER:-nobody} # pipe(8) refuses root and the mail owner
EXP_SAMPLE=20                      # VERP senders checked with `listwarden verify`
EXP_WAIT_TENTHS=600                # bound of the waits for the fan-out (60 s)
EXP_LIST=news
EXP_DOMAIN=lists.example.org
EXP_ADDRESS=$EXP_LIST@$EXP_DOMAIN
EXP_UNSUBSCRIBE_URL=https://$EXP_DOMAIN/unsubscribe
EXP_DATA=$LW_IT_HOME/scenarios-expander

# Members with a part to play (all in the members file); the rest are
# memberNNNN@siteNN.example.net.
EXP_POSTER=member0001@site01.example.net
EXP_HARD=member0002@site02.example.net    # hard bounce: score 1
EXP_TS01=member0003@yahoo.example.com     # Yahoo TS01 deferral: no score
EXP_ARF=member0004@site04.example.net     # ARF abuse report: unsubscribed
EXP_ONECLICK=member0005@site05.example.net # one-click POST: unsubscribed
EXP_MAILTO=member0006@site06.example.net   # mail to the mailto: URI: unsubscribed
EXP_STRANGER=stranger@elsewhere.example.org
# The 30-day replay (exp_check_fault_replay): one member per fault=us
# bounce kind, and one with genuine 5.1.1 bounces.
EXP_REPLAY_DAYS=${LW_IT_EXP_REPLAY_DAYS:-30}
EXP_REPLAY_US=(member0010@site10.example.net member0011@site11.example.net
	member0012@site12.example.net member0013@site13.example.net member0014@site14.example.net)
EXP_REPLAY_THEM=member0015@site15.example.net
# The storm (exp_check_storm): 25 members, member0020..member0044, whose
# Gmail mailboxes all "do not exist" within a minute.
EXP_STORM_FIRST=20
EXP_STORM_COUNT=25

EXP_DIR="" EXP_STATE_DIR="" EXP_MEMBERS_FILE="" EXP_REINJECT_PORT="" EXP_GROUP=""
EXP_UNSUB_PORT="" # expander.unsubscribe_listen, set by exp_setup
EXP_POST_FILES=()  # the sink's dump files of the post's copies
EXP_SUMMARY=()     # numbers, printed with `say` at the end

# The members file: EXP_MEMBERS addresses, the special ones first.
exp_write_members() {
	local i
	{
		printf '# %s: integration test members (lib/expander.sh)\n' "$EXP_ADDRESS"
		printf '%s\n' "$EXP_POSTER" "$EXP_HARD" "$EXP_TS01" "$EXP_ARF" "$EXP_ONECLICK" "$EXP_MAILTO"
		for ((i = 7; i <= EXP_MEMBERS; i++)); do
			printf 'member%04d@site%02d.example.net\n' "$i" $((i % 50))
		done
	} >"$EXP_MEMBERS_FILE"
}

# Adds the expander list (first in `lists:`) and the `expander:` block to the
# written test config, then checks the result as root and as the pipe user.
exp_write_lw_config() {
	local tmp=$LW_CONFIG.tmp out who
	grep -q '^expander:' "$LW_CONFIG" && die "$LW_CONFIG already has an expander: block"
	awk -v list="$EXP_ADDRESS" -v members="$EXP_MEMBERS_FILE" -v url="$EXP_UNSUBSCRIBE_URL" '
		{ print }
		$0 == "lists:" && !done {
			print "  # The expander list of integration/lib/expander.sh."
			print "  - address: " list
			print "    preset: listwarden"
			print "    bounces: signed"
			print "    expand:"
			print "      members_file: \"" members "\""
			print "      posting: members"
			print "      refused_post: hold"
			print "      unsubscribe_url: \"" url "\""
			print "      bounce_threshold: 5"
			print "      on_complaint: unsubscribe"
			done = 1
		}' "$LW_CONFIG" >"$tmp"
	cat >>"$tmp" <<EOF
# The thin list expander (integration/lib/expander.sh): envelopes go to the
# private Postfix's no-milter reinjection listener.
expander:
  state_dir: "$EXP_STATE_DIR"
  inject: "smtp:127.0.0.1:$EXP_REINJECT_PORT"
  helo: $EXP_DOMAIN
  # One-click unsubscribe has a listener of its own (not the metrics one).
  unsubscribe_listen: "127.0.0.1:$EXP_UNSUB_PORT"
EOF
	grep -qF -- "- address: $EXP_ADDRESS" "$tmp" || die "could not add $EXP_ADDRESS to $LW_CONFIG (no 'lists:' line?)"
	mv -- "$tmp" "$LW_CONFIG"
	for who in root "$EXP_USER"; do
		if ! out=$(runuser -u "$who" -- "$LW_BIN" check-config "$LW_CONFIG" 2>&1); then
			printf '%s\n' "$out" >&2
			die "listwarden check-config (as $who) rejected the config with the expander list"
		fi
	done
}

# The lines between "# BEGIN listwarden expander" and "# END listwarden
# expander" of packaging file $1, uncommented: "#X" and "#  X" lose their
# "#"; "# X" is a comment and goes.
exp_shipped_block() {
	awk '
		/^# BEGIN listwarden expander$/ { inside = 1; next }
		/^# END listwarden expander$/ { inside = 0; next }
		inside && /^# [^ ]/ { next }
		inside && /^#/ { print substr($0, 2) }' "$1"
}

# The transport map, the pipe services, the reinjection listener and the
# main.cf settings the expander needs, added to the private instance. The
# master.cf and main.cf lines are the ones packaging/postfix/ ships, with
# the harness's binary, config, pipe user and port put in (each
# substitution must take, so the shipped lines cannot drift from what the
# test runs).
exp_write_postfix() {
	local shipped=$LW_IT_REPO/packaging/postfix block transport line settings=() dkim
	cat >"$EXP_DIR/transport" <<EOF
$EXP_ADDRESS listwarden:$EXP_LIST
$EXP_LIST-bounces@$EXP_DOMAIN listwarden_bounces:$EXP_LIST
$EXP_LIST-unsubscribe@$EXP_DOMAIN listwarden_unsubscribe:$EXP_LIST
$EXP_LIST-request@$EXP_DOMAIN listwarden_unsubscribe:$EXP_LIST
EOF
	block=$(exp_shipped_block "$shipped/master.cf")
	[[ $(grep -c 'argv=/usr/bin/listwarden-expand pipe ' <<<"$block") == 3 &&
		$(grep -c 'user=listwarden ' <<<"$block") == 3 &&
		$(grep -c -- '--config /etc/listwarden/listwarden.yaml ' <<<"$block") == 3 &&
		$(grep -c '^127\.0\.0\.1:10026 ' <<<"$block") == 1 ]] ||
		die "packaging/postfix/master.cf: the expander block is not in the expected shape"
	# The signer on the reinjection listener: the shipped override lines
	# (lib/dkim.sh) in place of its two no-milter lines.
	dkim=$(dkim_master_lines)
	block=$(awk -v m="$(sed -n 1p <<<"$dkim")" -v r="$(sed -n 2p <<<"$dkim")" '
		$0 == "  -o smtpd_milters=" { print m; n++; next }
		/^  -o receive_override_options=no_milters,/ { print r; n++; next }
		{ print }
		END { exit n != 2 }' <<<"$block") ||
		die "packaging/postfix/master.cf: the opendkim override does not fit the reinjection listener"
	[[ $dkim == *"smtpd_milters=unix:$DKIM_SOCKET"* ]] ||
		die "packaging/postfix/master.cf: the opendkim block names another socket than opendkim.conf"
	{
		echo "# listwarden's thin list expander: packaging/postfix/master.cf (lib/expander.sh)."
		sed -e "s|argv=/usr/bin/listwarden-expand |argv=$LW_EXPAND_BIN |" \
			-e "s|user=listwarden |user=$EXP_USER |" \
			-e "s|--config /etc/listwarden/listwarden.yaml |--config $LW_CONFIG |" \
			-e "s|^127\.0\.0\.1:10026 |127.0.0.1:$EXP_REINJECT_PORT |" <<<"$block"
	} >>"$PF_CONF/master.cf"
	# main.cf: the shipped settings, except that transport_maps gets the
	# test's map in front of the harness's own. It must come first: Postfix
	# tries each lookup key (user+ext@domain, then user@domain, then the
	# domain, ...) against every map in the list before the next key, so a
	# static: catch-all anywhere in the list would answer for
	# news-bounces+lw-...@ before the stripped key is tried (postfix.sh
	# uses a "*" entry, which comes after all keys). texthash: the format
	# of a hash: map, read at start, no postmap.
	transport=$(postconf -c "$PF_CONF" -h transport_maps)
	while IFS= read -r line; do
		case ${line%% =*} in
		transport_maps) settings+=("transport_maps = texthash:$EXP_DIR/transport, $transport") ;;
		*) settings+=("$line") ;;
		esac
	done < <(exp_shipped_block "$shipped/main.cf")
	if ((${#settings[@]} < 4)) || [[ ${settings[0]} != "transport_maps = texthash:"* ]]; then
		die "packaging/postfix/main.cf: the expander block is not in the expected shape"
	fi
	# In main.cf's section 3, outside the block; signed VERP needs it.
	settings+=("recipient_delimiter = +")
	postconf -c "$PF_CONF" -e "${settings[@]}" || die "postconf -e on the private main.cf failed"
}

# Sets up the expander list before listwarden and Postfix start. $1 is the
# base port (the reinjection listener is on +30).
exp_setup() {
	[[ $EXP_ENABLED == 1 ]] || return 0
	if [[ ! $EXP_MEMBERS =~ ^[0-9]+$ ]] || ((EXP_MEMBERS < 30 || EXP_MEMBERS > 100000)); then
		die "LW_IT_EXP_MEMBERS must be a number from 30 to 100000"
	fi
	EXP_REINJECT_PORT=$(($1 + 30))
	require_free_port "$EXP_REINJECT_PORT" "expander reinjection smtpd"
	EXP_UNSUB_PORT=$(($1 + 31))
	require_free_port "$EXP_UNSUB_PORT" "expander one-click listener"
	id -u "$EXP_USER" >/dev/null 2>&1 || die "no user $EXP_USER for the expander's pipe (LW_IT_EXPAND_USER)"
	[[ $(id -u "$EXP_USER") != 0 ]] || die "the expander's pipe user must not be root"
	EXP_GROUP=$(id -gn "$EXP_USER")
	EXP_DIR=$LW_IT_DIR/expander
	EXP_STATE_DIR=$EXP_DIR/state
	EXP_MEMBERS_FILE=$EXP_DIR/members/$EXP_LIST.txt
	mkdir -p "$EXP_DIR/members" "$EXP_STATE_DIR" "$EXP_DIR/sent"
	exp_write_members
	# The pipe user writes the members file (its lock and temporary files
	# live beside it) and the state; in production that is the `listwarden`
	# user, which the milter runs as too.
	chown -R "$EXP_USER:$EXP_GROUP" "$EXP_DIR/members" "$EXP_STATE_DIR"
	chmod 0750 "$EXP_DIR/members" "$EXP_STATE_DIR"
	# The expander signs with the run's key: readable by the pipe user's
	# group, still by nobody else.
	chgrp "$EXP_GROUP" "$(dirname "$LW_KEY_FILE")" "$LW_KEY_FILE"
	chmod 0750 "$(dirname "$LW_KEY_FILE")"
	chmod 0640 "$LW_KEY_FILE"
	runuser -u "$EXP_USER" -- test -x "$LW_EXPAND_BIN" || die "$EXP_USER cannot run $LW_EXPAND_BIN (the pipe would fail)"
	exp_write_lw_config
	dkim_setup
	exp_write_postfix
	say "expander: $EXP_ADDRESS, $EXP_MEMBERS members, pipe user $EXP_USER, reinjection smtpd 127.0.0.1:$EXP_REINJECT_PORT"
}

# Fills template $1 (integration/scenarios-expander/) into file $2:
# {token}, {member}, {domain} (the member's), {verp} and {date}.
exp_fill() {
	local text member=$4 verp=${5:-}
	text=$(<"$EXP_DATA/$1")
	text=${text//\{token\}/"$3"}
	text=${text//\{member\}/"$member"}
	text=${text//\{domain\}/"${member#*@}"}
	text=${text//\{verp\}/"$verp"}
	text=${text//\{date\}/"$(LC_ALL=C date -R)"}
	printf '%s\n' "$text" >"$2"
}

# Sends message file $4 over SMTP to Postfix's milter'd port: client $1
# (anything but 127.0.0.1 is played with XCLIENT), envelope sender $2,
# recipient $3; transcript $5. Prints the queue ID when the message was
# queued; otherwise prints the refusing reply and returns 1.
exp_send() {
	local client=$1 from=$2 rcpt=$3 eml=$4 transcript=$5 outcome reply args
	args=(--server 127.0.0.1 --port "$SMTPD_PORT" --timeout 30 --helo mx.remote.example
		--from "$from" --to "$rcpt" --data -)
	[[ $client == 127.0.0.1 ]] || args+=(--xclient-addr "$client" --xclient-name mx.remote.example)
	# swaks ends the data with CRLF . CRLF itself: no last newline.
	swaks "${args[@]}" < <(head -c -1 "$eml") >"$transcript" 2>&1 || true
	outcome=$(scn_outcome <"$transcript")
	reply=${outcome#*$'\t'}
	if [[ ${outcome%%$'\t'*} == data && $reply =~ ^250.*queued\ as\ ([0-9A-Za-z]+) ]]; then
		printf '%s\n' "${BASH_REMATCH[1]}"
		return 0
	fi
	printf '%s\n' "${outcome/$'\t'/: }"
	return 1
}

# pf_wait_delivery with the expander's longer bound; a deferral or bounce
# is printed with Postfix's reason. Returns 1 on timeout.
exp_wait_delivery() {
	local status
	status=$(pf_wait_delivery "$1" "$EXP_WAIT_TENTHS") || return 1
	if [[ $status == deferred || $status == bounced ]]; then
		grep -F " $1: " "$PF_LOG" | grep -oE 'status=(deferred|bounced).*' | head -n 1
	else
		echo "$status"
	fi
}

# The pipe's delivery line for queue ID $1 (relay=..., delays=..., status).
exp_pipe_line() {
	{ grep -F " $1: to=" "$PF_LOG" | grep -F 'relay=listwarden' | tail -n 1 | sed -E 's/.*(relay=)/\1/'; } || true
}

# Sends message file $3 from client $1, envelope sender $2, to recipient
# $4, and waits until the pipe service $5 took it (status=sent). Sets
# EXP_QID; on trouble returns 1 with the reason in EXP_ERROR.
EXP_QID="" EXP_ERROR=""
exp_deliver() {
	local client=$1 from=$2 eml=$3 rcpt=$4 service=$5 status line
	EXP_QID="" EXP_ERROR=""
	if ! EXP_QID=$(exp_send "$client" "$from" "$rcpt" "$eml" "${eml%.eml}.swaks"); then
		EXP_ERROR="Postfix refused the message to <$rcpt>: $EXP_QID"
		return 1
	fi
	if ! status=$(exp_wait_delivery "$EXP_QID"); then
		EXP_ERROR="queue ID $EXP_QID: no delivery within $((EXP_WAIT_TENTHS / 10))s"
		return 1
	fi
	if [[ $status != sent ]]; then
		EXP_ERROR="queue ID $EXP_QID to <$rcpt>: $status"
		return 1
	fi
	line=$(exp_pipe_line "$EXP_QID")
	EXP_SUMMARY+=("$(basename "$eml" .eml): $service pipe $(grep -oE 'delays=[^,]*' <<<"$line" || true)")
	if [[ $line != "relay=$service,"* ]]; then
		EXP_ERROR="queue ID $EXP_QID was not delivered by the $service pipe: $(grep -F " $EXP_QID: to=" "$PF_LOG" | tail -n 1 || true)"
		return 1
	fi
}

# The envelope sender (VERP) of the copy member $1 received, from the post's
# dump files; empty when there is none.
exp_verp_of() {
	((${#EXP_POST_FILES[@]} > 0)) || return 0
	awk -v m="$1" '
		FNR == 1 { records = 1; sender = "" }
		records && /^Received:/ { records = 0; nextfile }
		records && /^X-Mail-Args:/ { sender = $2; gsub(/[<>]/, "", sender) }
		records && /^X-Rcpt-Args:/ { r = $2; gsub(/[<>]/, "", r); if (tolower(r) == tolower(m)) { print sender; exit } }
	' "${EXP_POST_FILES[@]}"
}

# The dump file of member $1's copy of the post.
exp_copy_of() {
	((${#EXP_POST_FILES[@]} > 0)) || return 0
	{ grep -lF -- "<$1>" "${EXP_POST_FILES[@]}" | head -n 1; } || true
}

# `listwarden-expand members news` and `listwarden-expand bounces news`, as an operator
# runs them (output captured whole: no early close of the pipe).
exp_members() { "$LW_EXPAND_BIN" members -c "$LW_CONFIG" "$EXP_LIST" 2>&1 || true; }
exp_bounces() { "$LW_EXPAND_BIN" bounces -c "$LW_CONFIG" "$EXP_LIST" 2>&1 || true; }

# True when `listwarden-expand members` lists $1 (an active member).
exp_is_member() {
	local members
	members=$(exp_members)
	grep -qixF -- "$1" <<<"$members"
}

# Member $1's line of `listwarden-expand bounces` (empty when there is none).
exp_score_line() {
	local scores
	scores=$(exp_bounces)
	grep -iF -- "$1 " <<<"$scores" || true
}

# Seconds (2 decimals) from epoch time $1 to $2, both fractional.
exp_secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# A member's post reaches every member once, each copy with its own signed
# VERP sender and the List-* header fields; measures the fan-out.
exp_check_post() {
	local start errors=() token=lwit-$LW_IT_RUN_ID-expander-post eml=$EXP_DIR/sent/post.eml
	local t0 qid status i n last first pipe summary bad
	start=$(now_ms)
	exp_fill post.eml "$eml" "$token" "$EXP_POSTER"
	t0=$(date +%s.%N)
	if ! qid=$(exp_send 203.0.113.50 "$EXP_POSTER" "$EXP_ADDRESS" "$eml" "$EXP_DIR/sent/post.swaks"); then
		report expander-post-fanout "$start" "Postfix refused the post: $qid"
		return 0
	fi
	status=$(exp_wait_delivery "$qid") || status="no delivery within $((EXP_WAIT_TENTHS / 10))s"
	[[ $status == sent ]] || errors+=("the post (queue ID $qid) to the pipe: $status")
	pipe=$(exp_pipe_line "$qid")
	# Every copy carries the token; wait until all have arrived.
	n=0
	for ((i = 0; i < EXP_WAIT_TENTHS; i++)); do
		n=$({ grep -rlF -- "$token" "$SINK_DIR" 2>/dev/null || true; } | wc -l)
		((n < EXP_MEMBERS)) || break
		sleep 0.1
	done
	mapfile -t EXP_POST_FILES < <(grep -rlF -- "$token" "$SINK_DIR" 2>/dev/null || true)
	((${#EXP_POST_FILES[@]} == EXP_MEMBERS)) ||
		errors+=("${#EXP_POST_FILES[@]} copies reached the sink within $((EXP_WAIT_TENTHS / 10))s, expected $EXP_MEMBERS")
	if ((${#EXP_POST_FILES[@]} > 0)); then
		# The time of the last (and first) copy: the dump files' mtimes.
		read -r first last < <(find "${EXP_POST_FILES[@]}" -printf '%T@\n' | sort -n | awk 'NR == 1 { f = $1 } { l = $1 } END { print f, l }')
		EXP_SUMMARY+=("post to $EXP_MEMBERS members: first copy at the sink after $(exp_secs "$t0" "$first")s, last after $(exp_secs "$t0" "$last")s (pipe: ${pipe:-?})")
		# Let Postfix finish with every copy before reading the files whole.
		for ((i = 0; i < EXP_WAIT_TENTHS; i++)); do
			pf_queue_empty >/dev/null && break
			sleep 0.1
		done
		summary=$(exp_audit_copies)
		bad=$(grep -v '^ok ' <<<"$summary" | head -n 5 || true)
		[[ -z $bad ]] || errors+=("copies with problems (first 5):" "$bad")
		n=$(grep -c '^ok ' <<<"$summary" || true)
		((n == EXP_MEMBERS)) || errors+=("$n of $EXP_MEMBERS copies passed the audit")
		# Distinct VERP senders, one per member, and every member served.
		n=$(awk '$1 == "ok" { print tolower($2) }' <<<"$summary" | sort -u | wc -l)
		((n == EXP_MEMBERS)) || errors+=("$n distinct envelope senders among the copies, expected $EXP_MEMBERS")
		n=$(comm -3 <(awk '$1 == "ok" { print tolower($3) }' <<<"$summary" | sort) \
			<(grep -v '^#' "$EXP_MEMBERS_FILE" | tr '[:upper:]' '[:lower:]' | sort) | wc -l)
		((n == 0)) || errors+=("the recipients at the sink and the members file differ in $n addresses")
		exp_check_unchanged "$eml" errors
	fi
	report expander-post-fanout "$start" "${errors[@]}"
}

# The poster's own copy carries the post exactly as sent below the fields
# the expander added (and Postfix's Received of the inbound hop), so DKIM
# signatures survive. $1 is the sent message; reasons go to the array $2.
exp_check_unchanged() {
	local sent=$1 copy
	local -n out=$2
	copy=$(exp_copy_of "$EXP_POSTER")
	if [[ -z $copy ]]; then
		out+=("no copy for the poster $EXP_POSTER")
		return 0
	fi
	# Skip up to our Precedence field, then one Received header. (The sink
	# ends a message with an empty line: trailing empty lines do not count.)
	if ! diff <(tr -d '\r' <"$sent" | exp_trim_end) <(awk '
		!seen && /^Precedence: list$/ { seen = 1; next }
		seen == 1 && /^Received:/ { seen = 2; next }
		seen == 2 && /^[ \t]/ { next }
		seen == 2 { seen = 3 }
		seen == 3 { print }' "$copy" | exp_trim_end) >"$EXP_DIR/sent/post.diff" 2>&1; then
		out+=("the copy $copy differs from the post as sent below the added fields:" "$(head -n 8 "$EXP_DIR/sent/post.diff")")
	fi
}

# Standard input without its trailing empty lines.
exp_trim_end() {
	awk '{ line[NR] = $0 } END { n = NR; while (n > 0 && line[n] == "") n--; for (i = 1; i <= n; i++) print line[i] }'
}

# One line per copy of the post: "ok SENDER RCPT" when the copy has exactly
# one recipient, a VERP sender for that recipient, and our List-* fields
# (List-Unsubscribe with the recipient's https URL and the mailto one,
# List-Unsubscribe-Post, one Feedback-ID); otherwise "bad FILE: what".
exp_audit_copies() {
	awk -v list="$EXP_LIST" -v domain="$EXP_DOMAIN" -v url="$EXP_UNSUBSCRIBE_URL" '
		function finish() {
			if (file == "") return
			problem = ""
			if (nrcpt != 1) problem = problem " " nrcpt "-recipients"
			r = tolower(rcpt); at = index(r, "@")
			want = list "-bounces+lw-"
			tail = "=" substr(r, 1, at - 1) "=" substr(r, at + 1) "@" domain
			s = tolower(sender)
			if (index(s, want) != 1 || substr(s, length(s) - length(tail) + 1) != tail ||
			    (stamp = substr(s, length(want) + 1, length(s) - length(want) - length(tail))) !~ /^[0-9][0-9][0-9][0-9][0-9][a-z2-7]+$/ ||
			    length(stamp) != 21)
				problem = problem " sender-not-VERP-for-rcpt"
			if (!("list-id" in h) || index(h["list-id"], "<" list "." domain ">") == 0) problem = problem " List-Id"
			if (!("list-post" in h) || index(h["list-post"], "<mailto:" list "@" domain ">") == 0) problem = problem " List-Post"
			if (!("list-help" in h) || index(h["list-help"], "<mailto:" list "-request@" domain) == 0) problem = problem " List-Help"
			u = h["list-unsubscribe"]
			if (index(u, "<mailto:" list "-unsubscribe+lw-") == 0 ||
			    index(tolower(u), "<" url "?list=" list "&m=" r "&t=") == 0)
				problem = problem " List-Unsubscribe"
			if (h["list-unsubscribe-post"] != "List-Unsubscribe=One-Click") problem = problem " List-Unsubscribe-Post"
			if (h["feedback-id"] != list "." domain ":" domain ":listwarden") problem = problem " Feedback-ID"
			if (problem == "") print "ok", sender, rcpt
			else print "bad", file ":" problem
		}
		FNR == 1 { finish(); file = FILENAME; records = 1; inhdr = 0; nrcpt = 0; sender = ""; rcpt = ""; name = ""; delete h }
		records && /^X-Mail-Args:/ { sender = $2; gsub(/[<>]/, "", sender); next }
		records && /^X-Rcpt-Args:/ { rcpt = $2; gsub(/[<>]/, "", rcpt); nrcpt++; next }
		records && /^Received:/ { records = 0; inhdr = 1 }
		inhdr && /^\r?$/ { inhdr = 0; nextfile }
		inhdr && /^[ \t]/ { if (name != "") { v = $0; sub(/^[ \t]+/, " ", v); sub(/\r$/, "", v); h[name] = h[name] v } ; next }
		inhdr {
			c = index($0, ":"); name = tolower(substr($0, 1, c - 1)); v = substr($0, c + 1)
			sub(/^[ \t]+/, "", v); sub(/\r$/, "", v)
			if (name in h) h[name] = h[name] "\n" v
			else h[name] = v
		}
		END { finish() }' "${EXP_POST_FILES[@]}"
}

# `listwarden verify` calls a sample of the copies' VERP senders valid.
exp_check_verp_sample() {
	local start errors=() sender out rc checked=0
	start=$(now_ms)
	if ((${#EXP_POST_FILES[@]} == 0)); then
		report expander-verp-verify "$start" "no copies of the post to check"
		return 0
	fi
	while read -r sender; do
		rc=0
		out=$("$LW_BIN" verify -c "$LW_CONFIG" "$sender" 2>/dev/null) || rc=$?
		[[ $out == "valid (signed VERP"* && $rc == 0 ]] || errors+=("verify <$sender>: '$out' (exit $rc)")
		checked=$((checked + 1))
	done < <(scn_sink_envelope "${EXP_POST_FILES[@]}" | awk '$1 == "mail" { print $2 }' | shuf -n "$EXP_SAMPLE")
	((checked == EXP_SAMPLE)) || errors+=("checked $checked senders, expected $EXP_SAMPLE")
	report expander-verp-verify "$start" "${errors[@]}"
}

# A stranger's post is held (refused_post: hold), and reaches nobody.
exp_check_nonmember() {
	local start errors=() token=lwit-$LW_IT_RUN_ID-expander-nonmember eml=$EXP_DIR/sent/nonmember.eml held
	start=$(now_ms)
	exp_fill nonmember-post.eml "$eml" "$token" "$EXP_STRANGER"
	if exp_deliver 203.0.113.51 "$EXP_STRANGER" "$eml" "$EXP_ADDRESS" listwarden; then
		held=$({ grep -rlF -- "$token" "$EXP_STATE_DIR/$EXP_LIST/held" 2>/dev/null | head -n 1; } || true)
		[[ -n $held ]] || errors+=("nothing in $EXP_STATE_DIR/$EXP_LIST/held/ holds the post")
		pf_queue_empty >/dev/null || errors+=("Postfix's queue is not empty after the refused post")
		[[ -z $(scn_sink_files "$token") ]] || errors+=("the refused post reached the sink")
	else
		errors+=("$EXP_ERROR")
	fi
	report expander-nonmember-held "$start" "${errors[@]}"
}

# A hard bounce (5.1.1) from a stranger's MX to a member's VERP address:
# the milter accepts and tags it, the bounce pipe scores the member 1.
exp_check_hard_bounce() {
	local start errors=() token=lwit-$LW_IT_RUN_ID-expander-hard eml=$EXP_DIR/sent/hard.eml verp line
	start=$(now_ms)
	verp=$(exp_verp_of "$EXP_HARD")
	if [[ -z $verp ]]; then
		report expander-hard-bounce "$start" "no copy of the post for $EXP_HARD to take the VERP address from"
		return 0
	fi
	exp_fill hard-bounce.eml "$eml" "$token" "$EXP_HARD" "$verp"
	if exp_deliver 198.18.7.25 '<>' "$eml" "$verp" listwarden_bounces; then
		exp_wait_log "$LW_LOG" "queue_id=\"$EXP_QID\".*list=\"$EXP_LIST\" class=\"hard\" reason=\"unknown_user\"" ||
			errors+=("listwarden logged no hard/unknown_user classification for $EXP_QID")
		line=$(exp_score_line "$EXP_HARD")
		[[ $line == "$EXP_HARD 1.0 active"* ]] ||
			errors+=("listwarden-expand bounces $EXP_LIST: '${line:-no line}' for $EXP_HARD, expected score 1.0, active")
	else
		errors+=("$EXP_ERROR")
	fi
	report expander-hard-bounce "$start" "${errors[@]}"
}

# Yahoo's TS01 complaint deferral (Action: delayed) to another member's VERP
# address: classified as a deferral, and the member's score stays 0.
exp_check_ts01() {
	local start errors=() token=lwit-$LW_IT_RUN_ID-expander-ts01 eml=$EXP_DIR/sent/ts01.eml verp line
	start=$(now_ms)
	verp=$(exp_verp_of "$EXP_TS01")
	if [[ -z $verp ]]; then
		report expander-ts01-no-score "$start" "no copy of the post for $EXP_TS01 to take the VERP address from"
		return 0
	fi
	exp_fill ts01-delay.eml "$eml" "$token" "$EXP_TS01" "$verp"
	if exp_deliver 198.18.8.25 '<>' "$eml" "$verp" listwarden_bounces; then
		exp_wait_log "$LW_LOG" "queue_id=\"$EXP_QID\".*list=\"$EXP_LIST\" class=\"deferral\" reason=\"complaint\"" ||
			errors+=("listwarden logged no deferral/complaint classification for $EXP_QID")
		line=$(exp_score_line "$EXP_TS01")
		[[ -z $line || $line == "$EXP_TS01 0.0 "* ]] ||
			errors+=("listwarden-expand bounces $EXP_LIST: '$line', expected no score for $EXP_TS01")
		exp_is_member "$EXP_TS01" || errors+=("$EXP_TS01 is no longer a member")
	else
		errors+=("$EXP_ERROR")
	fi
	report expander-ts01-no-score "$start" "${errors[@]}"
}

# An ARF abuse report from an ordinary sender to a member's VERP address
# unsubscribes the member (on_complaint: unsubscribe).
exp_check_arf() {
	local start errors=() token=lwit-$LW_IT_RUN_ID-expander-arf eml=$EXP_DIR/sent/arf.eml verp
	start=$(now_ms)
	verp=$(exp_verp_of "$EXP_ARF")
	if [[ -z $verp ]]; then
		report expander-arf-unsubscribes "$start" "no copy of the post for $EXP_ARF to take the VERP address from"
		return 0
	fi
	exp_is_member "$EXP_ARF" || errors+=("$EXP_ARF was not a member before the report")
	exp_fill arf-abuse.eml "$eml" "$token" "$EXP_ARF" "$verp"
	if exp_deliver 198.18.9.25 feedback@fbl.example.net "$eml" "$verp" listwarden_bounces; then
		exp_wait_log "$LW_LOG" "queue_id=\"$EXP_QID\".*list=\"$EXP_LIST\" class=\"complaint\"" ||
			errors+=("listwarden logged no complaint classification for $EXP_QID")
		! exp_is_member "$EXP_ARF" || errors+=("$EXP_ARF is still a member after the abuse report")
	else
		errors+=("$EXP_ERROR")
	fi
	report expander-arf-unsubscribes "$start" "${errors[@]}"
}

# The one-click URL of a delivered copy: a GET changes nothing, a POST with
# List-Unsubscribe=One-Click unsubscribes (200), a repeated POST nobody else.
exp_check_one_click() {
	local start errors=() copy url="" path status before after
	start=$(now_ms)
	copy=$(exp_copy_of "$EXP_ONECLICK")
	if [[ -n $copy ]]; then
		url=$({ scn_sink_headers "$copy" | grep -i '^List-Unsubscribe:' |
			grep -oE "<$EXP_UNSUBSCRIBE_URL\?[^>]*>" | tr -d '<>' | head -n 1; } || true)
	fi
	if [[ -z $url ]]; then
		report expander-one-click "$start" "no https List-Unsubscribe URL in the copy for $EXP_ONECLICK"
		return 0
	fi
	path=/${url#https://*/}
	before=$(exp_members | wc -l)
	status=$(exp_http GET "$path" "")
	EXP_SUMMARY+=("one-click: GET answered $status")
	[[ $status != none && $status != 2* ]] || errors+=("GET $path answered $status; expected a refusal such as 405")
	exp_is_member "$EXP_ONECLICK" || errors+=("$EXP_ONECLICK was unsubscribed by a GET")
	status=$(exp_http POST "$path" "List-Unsubscribe=One-Click")
	[[ $status == 200 ]] || errors+=("POST $path answered $status, expected 200")
	! exp_is_member "$EXP_ONECLICK" || errors+=("$EXP_ONECLICK is still a member after the one-click POST")
	after=$(exp_members | wc -l)
	((after == before - 1)) || errors+=("the list went from $before to $after lines, expected one fewer")
	# Written by root (the milter here), the file must stay the pipe user's.
	[[ $(stat -c %U "$EXP_MEMBERS_FILE") == "$EXP_USER" ]] ||
		errors+=("after the POST $EXP_MEMBERS_FILE belongs to $(stat -c %U "$EXP_MEMBERS_FILE"), not $EXP_USER")
	# The same token again: nothing left to remove, nobody else goes.
	status=$(exp_http POST "$path" "List-Unsubscribe=One-Click")
	after=$(exp_members | wc -l)
	((after == before - 1)) || errors+=("a repeated POST (answer $status) left $after lines, expected $((before - 1))")
	report expander-one-click "$start" "${errors[@]}"
}

# Mail to the mailto: URI of a copy's List-Unsubscribe (the signed
# LIST-unsubscribe+TOKEN address) goes through the unsubscribe pipe and
# unsubscribes that member.
exp_check_mailto_unsubscribe() {
	local start errors=() token=lwit-$LW_IT_RUN_ID-expander-mailto eml=$EXP_DIR/sent/mailto.eml copy rcpt=""
	start=$(now_ms)
	copy=$(exp_copy_of "$EXP_MAILTO")
	if [[ -n $copy ]]; then
		rcpt=$({ scn_sink_headers "$copy" | grep -i '^List-Unsubscribe:' |
			grep -oE "<mailto:$EXP_LIST-unsubscribe\+[^?>]*" | sed 's/^<mailto://' | head -n 1; } || true)
	fi
	if [[ -z $rcpt ]]; then
		report expander-mailto-unsubscribe "$start" "no mailto: List-Unsubscribe URI in the copy for $EXP_MAILTO"
		return 0
	fi
	exp_is_member "$EXP_MAILTO" || errors+=("$EXP_MAILTO was not a member before the mail")
	exp_fill unsubscribe.eml "$eml" "$token" "$EXP_MAILTO" "$rcpt"
	if exp_deliver 203.0.113.52 "$EXP_MAILTO" "$eml" "$rcpt" listwarden_unsubscribe; then
		! exp_is_member "$EXP_MAILTO" || errors+=("$EXP_MAILTO is still a member after mailing <$rcpt>")
	else
		errors+=("$EXP_ERROR")
	fi
	report expander-mailto-unsubscribe "$start" "${errors[@]}"
}

# The fault=us bounce of kind $1 for member $2: "status|remote|diagnostic|rule".
exp_fault_kind() {
	case $1 in
	s3150) echo "5.7.1|hotmail-com.olc.protection.outlook.com|550 5.7.1 Unfortunately, messages from [192.0.2.25] weren't sent. Please contact your Internet service provider since part of their network is on our block list (S3150). [DB5EUR03FT001.eop-EUR03.prod.protection.outlook.com]|microsoft-s3140-s3150" ;;
	spamhaus) echo "5.7.1|mx.${2#*@}|554 5.7.1 Service unavailable; Client host [192.0.2.25] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/192.0.2.25|spamhaus-listed" ;;
	gmail-5.7.26) echo "5.7.26|gmail-smtp-in.l.google.com|550-5.7.26 This message does not have authentication information or fails to pass authentication checks (SPF or DKIM). To best protect our users from spam, the message has been blocked. x12si34 - gsmtp|gmail-auth-missing" ;;
	ms-5.7.515) echo "5.7.515|outlook-com.olc.protection.outlook.com|550 5.7.515 Access denied, sending domain lists.example.org does not meet the required authentication level.|microsoft-5.7.515-auth" ;;
	ts01-expired) echo "4.7.0|mta7.am0.yahoodns.net|421 4.7.0 [TS01] Messages from 192.0.2.25 temporarily deferred due to user complaints - 4.16.55.1|yahoo-ts01" ;;
	esac
}

# Ages the list's bounce state by one day (every day stamp one earlier),
# under the expander's own lock: the simulated clock of the replay. The
# expander counts at most one bounce a day per member, so a month of
# bounces needs a month of days; Postfix, the milter and the pipe are real.
exp_age_state() {
	local dir=$EXP_STATE_DIR/$EXP_LIST
	[[ -f $dir/bounces.json ]] || return 0
	# As the pipe user, so the lock and state files stay that user's.
	runuser -u "$EXP_USER" -- flock "$dir/.bounces.json.lock" python3 - "$dir/bounces.json" <<'PY' || return 1
import json, os, sys
path = sys.argv[1]
with open(path) as f:
    state = json.load(f)
for record in state.get("members", {}).values():
    for key in ("last_day", "disabled_day", "last_complaint_day"):
        if record.get(key) is not None:
            record[key] -= 1
st = os.stat(path)
tmp = path + ".age"
with open(tmp, "w") as f:
    json.dump(state, f)
os.chmod(tmp, st.st_mode & 0o7777)
os.replace(tmp, path)
PY
}

# 30 days of bounces through Postfix, the milter and the bounce pipe: each
# day a Microsoft S3150 block, a Spamhaus listing, a Gmail 5.7.26, a
# Microsoft 5.7.515 and an expired Yahoo TS01, each for its own member
# (all fault=us), and a genuine 5.1.1 for another member; the state is aged
# a day between days. Nobody is disabled for the fault=us bounces, and the
# 5.1.1 member is disabled on day 5 (threshold 5, one point a day). Each
# day's bounces come from a /24 of their own (198.19.DAY.0): a month of
# bounces in seconds would otherwise meet the per-network bounce budget,
# which a real month spreads over time.
exp_check_fault_replay() {
	local start errors=() day i kind member eml token status remote diag rule line text
	local kinds=(s3150 spamhaus gmail-5.7.26 ms-5.7.515 ts01-expired) sent=0 disabled_on="" t0
	local summary=${#EXP_SUMMARY[@]} # one line per delivery would be 180 lines
	start=$(now_ms)
	t0=$(now_ms)
	declare -A verps=()
	for member in "${EXP_REPLAY_US[@]}" "$EXP_REPLAY_THEM"; do
		verps[$member]=$(exp_verp_of "$member")
		[[ -n ${verps[$member]} ]] || errors+=("no copy of the post for $member to take the VERP address from")
	done
	if ((${#errors[@]} > 0)); then
		report expander-fault-replay "$start" "${errors[@]}"
		return 0
	fi
	for ((day = 1; day <= EXP_REPLAY_DAYS; day++)); do
		for i in "${!kinds[@]}"; do
			kind=${kinds[$i]} member=${EXP_REPLAY_US[$i]}
			IFS='|' read -r status remote diag rule <<<"$(exp_fault_kind "$kind" "$member")"
			token=lwit-$LW_IT_RUN_ID-replay-$day-$kind
			eml=$EXP_DIR/sent/replay-$day-$kind.eml
			exp_fill fault-dsn.eml "$eml" "$token" "$member" "${verps[$member]}"
			text=$(<"$eml")
			text=${text//\{status\}/"$status"}
			text=${text//\{remote\}/"$remote"}
			text=${text//\{diag\}/"$diag"}
			printf '%s\n' "$text" >"$eml"
			if exp_deliver "198.19.$day.25" '<>' "$eml" "${verps[$member]}" listwarden_bounces; then
				sent=$((sent + 1))
				if ((day == 1)); then
					exp_wait_log "$LW_LOG" "queue_id=\"$EXP_QID\".*rule=\"?$rule\"? fault=\"us\"" ||
						errors+=("day 1, $kind: listwarden logged no rule=$rule fault=us for $EXP_QID")
				fi
			else
				errors+=("day $day, $kind: $EXP_ERROR")
			fi
		done
		token=lwit-$LW_IT_RUN_ID-replay-$day-them
		eml=$EXP_DIR/sent/replay-$day-them.eml
		exp_fill hard-bounce.eml "$eml" "$token" "$EXP_REPLAY_THEM" "${verps[$EXP_REPLAY_THEM]}"
		if exp_deliver "198.19.$day.26" '<>' "$eml" "${verps[$EXP_REPLAY_THEM]}" listwarden_bounces; then
			sent=$((sent + 1))
		else
			errors+=("day $day, 5.1.1: $EXP_ERROR")
		fi
		line=$(exp_score_line "$EXP_REPLAY_THEM")
		if [[ -z $disabled_on && $line == "$EXP_REPLAY_THEM "*" disabled"* ]]; then
			disabled_on=$day
		fi
		exp_age_state || errors+=("could not age the bounce state after day $day")
		((${#errors[@]} < 5)) || break
	done
	for member in "${EXP_REPLAY_US[@]}"; do
		line=$(exp_score_line "$member")
		[[ -z $line || $line == "$member 0.0 active"* ]] ||
			errors+=("a fault=us member was scored: '$line'")
		exp_is_member "$member" || errors+=("$member is no longer a member")
	done
	[[ $disabled_on == 5 ]] ||
		errors+=("$EXP_REPLAY_THEM (5.1.1 daily) disabled on day '${disabled_on:-never}', expected day 5 ($(exp_score_line "$EXP_REPLAY_THEM"))")
	EXP_SUMMARY=("${EXP_SUMMARY[@]:0:summary}")
	EXP_SUMMARY+=("fault replay: $EXP_REPLAY_DAYS days, $sent bounces through Postfix in $(( ($(now_ms) - t0) / 1000 ))s; fault=us members scored: none expected; 5.1.1 member disabled on day ${disabled_on:-never}")
	report expander-fault-replay "$start" "${errors[@]}"
}

# A bounce storm, as in Gmail's outage of December 2022 (valid mailboxes
# answered "550-5.1.1 The email account that you tried to reach does not
# exist"): 25 members at Gmail fail with the same rule within a minute.
# The milter's storm detector (classification.incident, 20 members in 10
# minutes by default) raises listwarden_bounce_incident{provider="gmail",
# rule="text-unknown-user"} and logs it once; from the 20th member on the
# tags say fault=us incident=1, and the expander scores only the first 19.
# Each DSN comes from a /24 of its own, 198.19.(100+N).0 (the per-network
# bounce budget).
# Runs last: the incident stays up for an hour in this milter.
exp_check_storm() {
	local start errors=() i n member verp eml token line text scored=0 spared=0 incident_tags=0 metrics value raised qid
	local qids=() summary=${#EXP_SUMMARY[@]}
	start=$(now_ms)
	for ((i = 0; i < EXP_STORM_COUNT; i++)); do
		n=$((EXP_STORM_FIRST + i))
		member=$(printf 'member%04d@site%02d.example.net' "$n" $((n % 50)))
		verp=$(exp_verp_of "$member")
		if [[ -z $verp ]]; then
			errors+=("no copy of the post for $member to take the VERP address from")
			continue
		fi
		token=lwit-$LW_IT_RUN_ID-storm-$i
		eml=$EXP_DIR/sent/storm-$i.eml
		exp_fill fault-dsn.eml "$eml" "$token" "$member" "$verp"
		text=$(<"$eml")
		text=${text//\{status\}/5.1.1}
		text=${text//\{remote\}/gmail-smtp-in.l.google.com}
		text=${text//\{diag\}/"550-5.1.1 The email account that you tried to reach does not exist. Please try double-checking the recipient's email address for typos or unnecessary spaces. x23si45 - gsmtp"}
		printf '%s\n' "$text" >"$eml"
		if ! exp_deliver "198.19.$((100 + i)).25" '<>' "$eml" "$verp" listwarden_bounces; then
			errors+=("storm DSN $i: $EXP_ERROR")
			continue
		fi
		qids+=("$EXP_QID")
		line=$(exp_score_line "$member")
		if [[ $line == "$member 1.0 active"* ]]; then
			scored=$((scored + 1))
			((i < 19)) || errors+=("member $((i + 1)) of the storm was scored: '$line'")
		elif [[ -z $line ]]; then
			spared=$((spared + 1))
			((i >= 19)) || errors+=("member $((i + 1)) of the storm (before the trigger) was not scored")
		else
			errors+=("unexpected score for $member: '$line'")
		fi
	done
	for qid in "${qids[@]}"; do
		grep -qE "queue_id=\"$qid\".*provider=\"?gmail\"? rule=\"?text-unknown-user\"? fault=\"us\" incident=true" "$LW_LOG" &&
			incident_tags=$((incident_tags + 1))
	done
	((incident_tags == EXP_STORM_COUNT - 19)) ||
		errors+=("$incident_tags bounces classified fault=us incident=true, expected $((EXP_STORM_COUNT - 19))")
	raised=$(grep -c 'bounce incident: many members' "$LW_LOG" || true)
	[[ $raised == 1 ]] || errors+=("the incident was logged $raised times, expected once")
	metrics=$LW_IT_DIR/metrics-storm.txt
	if lw_fetch_metrics "$METRICS_PORT" "$metrics"; then
		value=$(lw_metric_sum "$metrics" listwarden_bounce_incident 'provider="gmail"' 'rule="text-unknown-user"')
		[[ $value == 1 ]] || errors+=("listwarden_bounce_incident{provider=gmail,rule=text-unknown-user} is $value, expected 1")
	else
		errors+=("GET /metrics failed")
	fi
	EXP_SUMMARY=("${EXP_SUMMARY[@]:0:summary}")
	EXP_SUMMARY+=("storm: $EXP_STORM_COUNT Gmail 5.1.1 DSNs for distinct members: $scored scored before the trigger, $spared spared as fault=us incident=1; incident logged $raised time(s), gauge ${value:-?}")
	report expander-storm "$start" "${errors[@]}"
}

# An HTTP request over bash's /dev/tcp to the one-click listener: method $1,
# path $2, form body $3. Prints the status code (or "none").
exp_http() {
	local response
	# shellcheck disable=SC2016 # $1..$4 expand in the inner bash
	response=$(timeout 5 bash -c '
		exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
		printf "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s" \
			"$2" "$3" "$5" "${#4}" "$4" >&3
		cat <&3' _ "$EXP_UNSUB_PORT" "$1" "$2" "$3" "$EXP_DOMAIN" 2>/dev/null) || true
	response=${response%%$'\r'*}
	if [[ $response =~ ^HTTP/1\.[01]\ ([0-9]{3}) ]]; then
		printf '%s\n' "${BASH_REMATCH[1]}"
	else
		echo none
	fi
}

# Waits up to 3 s for a line of log $1 matching extended regex $2.
exp_wait_log() {
	local i
	for ((i = 0; i < 30; i++)); do
		grep -qE -- "$2" "$1" && return 0
		sleep 0.1
	done
	return 1
}

check_expander() {
	local t0 took line
	[[ $EXP_ENABLED == 1 ]] || return 0
	t0=$(now_ms)
	exp_check_post
	dkim_check_copies
	exp_check_verp_sample
	exp_check_nonmember
	exp_check_hard_bounce
	exp_check_ts01
	exp_check_fault_replay
	exp_check_arf
	exp_check_one_click
	exp_check_mailto_unsubscribe
	exp_check_storm
	took=$(($(now_ms) - t0))
	EXP_SUMMARY+=("all expander checks took $((took / 1000)).$(printf '%02d' $((took % 1000 / 10)))s")
	for line in "${EXP_SUMMARY[@]}"; do say "expander: $line"; done
}
