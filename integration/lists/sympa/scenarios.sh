# shellcheck shell=bash
# The list-manager scenarios against Sympa, sourced by ./run (which holds
# the helpers: member_bounce, expect_outcome; lib/lists.sh: smtp_send,
# render, wait_*, report_scn, note).
# shellcheck disable=SC2153 # globals come from ./run and ../../lib

POST_SENDER=""  # the signed envelope sender of the list's post (prvs=...=test-owner@)
POST_MSGID=""   # the post's Message-ID (Sympa keeps it on the copies)
POST_SUBJECT=""
FORGED_SENT=0
FORGED_REFUSED=0
FORGED_REACHED=0
REAL_SENT=0
REAL_RECORDED=0
MEMBERS=()
VERP_SENDERS=() # member<TAB>signed VERP sender, from scn_verp's post

SENT_QID="" # the queue ID of the last queued send (queued_id)

# A DSN (template $1: dsn-hard or ts01) for member $2, answering the post
# whose envelope sender was $3; message id token $4; written to $5.
make_dsn() {
	render "$SY_HOME/messages/$1.eml.in" "$5" "TO=$3" "RCPT=$2" "MSGID=$4" \
		"DATE=$(LC_ALL=C date -R)" "POST_MSGID=$POST_MSGID" "SUBJECT=$POST_SUBJECT"
}

# Sends DSN file $3 from client $1 (HELO $2) with the null sender to $4.
send_dsn() {
	smtp_send "$1" "$2" '<>' "$4" "$SY/msgs/$(basename "$3" .eml).swaks" "$3"
}

# Byte size of Sympa daemon $1's log (an offset for wait_text).
sylog_size() { scn_file_size "$SY/log/$1.log"; }

# Waits until bounced.pl logged that it processed the message with id
# token $1 after offset $2, then until it logged a decision (one of the
# remaining arguments) about it. Prints the decision's log line, or
# nothing on timeout.
bounced_decision() {
	local token=$1 offset=$2 i pattern line
	shift 2
	wait_text "$SY/log/bounced.log" "$offset" "message_id=$token" || return 0
	for ((i = 0; i < SY_WAIT_TENTHS; i++)); do
		for pattern in "$@"; do
			line=$(lines_after "$SY/log/bounced.log" "$offset" "$pattern" | head -n 1)
			if [[ -n $line ]]; then
				printf '%s\n' "$line"
				return 0
			fi
		done
		sleep 0.1
	done
}

# Checks that Postfix handed queue ID $1 to Sympa's bounce pipe for
# recipient $2 (the plain address listwarden restored).
expect_sympabounce() {
	local qid=$1 rcpt=$2 status lines
	[[ -n $qid ]] || return 0
	status=$(pf_wait_delivery "$qid") || status=timeout
	lines=$(grep -F " $qid: " "$PF_LOG" || true)
	[[ $status == sent ]] && grep -qF "to=<$rcpt>, relay=sympabounce" <<<"$lines" ||
		ERRS+=("queue $qid: not delivered to <$rcpt> by the sympabounce pipe ($status): $(grep -F 'to=<' <<<"$lines" | head -n 2 | tr '\n' '|')")
}

# Checks that file $1 (a copy Sympa stored) carries a tag with every
# text of the remaining arguments.
expect_tag() {
	local file=$1 tag want
	shift
	if [[ ! -f $file ]]; then
		ERRS+=("no copy of the bounce in Sympa's storage ($file)")
		return 0
	fi
	tag=$(grep -m 1 '^X-Listwarden-Bounce:' "$file" || true)
	for want in "$@"; do
		[[ $tag == *"$want"* ]] || ERRS+=("tag in $(basename "$file") lacks '$want': '$tag'")
	done
}

# a. A member's post is distributed; every copy at the sink has a signed
# envelope sender.
scn_post() {
	local start token eml out files want got i sender senders f roles
	start=$(now_ms)
	token=lwsympa-$RUN_ID-post
	POST_MSGID=$token@members.example
	POST_SUBJECT="Hello from Alice $token"
	eml=$SY/msgs/post.eml
	cat >"$eml" <<EOF
From: Alice <alice@members.example>
To: $LIST_ADDR
Subject: $POST_SUBJECT
Date: $(LC_ALL=C date -R)
Message-ID: <$POST_MSGID>

A member's post ($token).
EOF
	out=$(smtp_send 203.0.113.50 mx.members.example alice@members.example "$LIST_ADDR" "$SY/msgs/post.swaks" "$eml")
	expect_outcome "$out" data 250 "the post"
	want=$(printf '%s\n' "${MEMBERS[@]}" | sort -u | tr '\n' ' ')
	got=""
	for ((i = 0; i < SY_WAIT_TENTHS && ${#ERRS[@]} == 0; i++)); do
		files=$(scn_sink_files "$token")
		if [[ -n $files ]]; then
			# shellcheck disable=SC2086 # one file name a line, no spaces
			got=$(scn_sink_envelope $files | awk '$1 == "rcpt" { print tolower($2) }' | sort -u | tr '\n' ' ')
			[[ $got == "$want" ]] && break
		fi
		sleep 0.1
	done
	if ((${#ERRS[@]} == 0)); then
		[[ $got == "$want" ]] || ERRS+=("the sink got copies for '${got% }', expected '${want% }'")
		# shellcheck disable=SC2086
		senders=$(scn_sink_envelope $files | awk '$1 == "mail" { print $2 }' | sort -u)
		for sender in $senders; do
			[[ ${sender,,} == prvs=*"=$OWNER_ADDR" ]] ||
				ERRS+=("a copy left with envelope sender <$sender>, expected prvs=...=$OWNER_ADDR")
			"$LW_BIN" verify -c "$LW_CONFIG" "$sender" >/dev/null 2>&1 ||
				ERRS+=("listwarden verify <$sender>: not valid")
		done
		POST_SENDER=$(head -n 1 <<<"$senders")
		# shellcheck disable=SC2206 # one file name per word
		LISTS_COPIES+=($files)
		f=$(head -n 1 <<<"$files")
		grep -q "^List-Id: <$LIST.$DOMAIN>" "$f" || ERRS+=("no List-Id in the copy $f")
		! grep -qi '^X-Listwarden' "$f" || ERRS+=("a copy carries an X-Listwarden header")
		roles=$(scn_sink_headers "$f" | grep -oiE '^(Sender|Errors-To|X-Loop|List-[A-Za-z]+|Reply-To): .*' |
			grep -oiE "[a-z0-9._+=-]+@$DOMAIN" | sort -u | tr '\n' ' ')
		note "post: $(wc -l <<<"$files") sendmail submission(s) for ${#MEMBERS[@]} members, envelope sender $POST_SENDER; list addresses in Sympa's headers: ${roles% }"
	fi
	report_scn post-signed "$start"
}

# b. A DSN for one member to the signed address is accepted, tagged and
# recorded by Sympa against that member.
scn_bounce() {
	local start token eml out record member=bob@members.example
	start=$(now_ms)
	if [[ -z $POST_SENDER ]]; then
		ERRS+=("no signed sender from the post scenario")
		report_scn bounce-recorded "$start"
		return 0
	fi
	token=lwsympa-$RUN_ID-bounce
	eml=$SY/msgs/bounce.eml
	make_dsn dsn-hard "$member" "$POST_SENDER" "$token" "$eml"
	out=$(send_dsn 198.51.100.9 mx1.members.example "$eml" "$POST_SENDER")
	SENT_QID=$(queued_id "$out" || true)
	expect_outcome "$out" data 250 "the bounce"
	if ((${#ERRS[@]} == 0)); then
		expect_sympabounce "$SENT_QID" "$OWNER_ADDR"
		if record=$(wait_member_bounce "$member"); then
			[[ $record == *" 5.1.1" ]] || ERRS+=("Sympa recorded '$record' for $member, expected status 5.1.1")
			note "bounce: Sympa's subscriber_table.bounce_subscriber for $member = '$record' (first, last, count, status)"
		else
			ERRS+=("Sympa recorded no bounce for $member: $(tail -n 3 "$SY/log/bounced.log" | tr '\n' '|')")
		fi
		expect_tag "$SY/lib/bounce/$LIST_ADDR/$member" "recipient=$member;" "action=failed;" \
			"status=5.1.1;" "class=hard;" "reason=unknown_user;" "list=$LIST;" "signature=valid"
	fi
	report_scn bounce-recorded "$start"
}

# c. A Yahoo TS01 deferral DSN is tagged as a complaint deferral. Without
# help Sympa counts it (every 4.x.x/5.x.x status is a bounce to it); with
# conf/milter_header_checks it never reaches Sympa.
scn_ts01() {
	local start token eml out record offset decision lines file member=dave@yahoo.example
	start=$(now_ms)
	if [[ -z $POST_SENDER ]]; then
		ERRS+=("no signed sender from the post scenario")
		report_scn ts01-deferral "$start"
		return 0
	fi
	# Sent by the outbound relay that met Yahoo's deferral: Postfix itself
	# sends no delay DSN by default (delay_warning_time = 0h), and a DSN it
	# makes itself does not pass the milters (internal_mail_filter_classes).
	token=lwsympa-$RUN_ID-ts01
	eml=$SY/msgs/ts01.eml
	make_dsn ts01 "$member" "$POST_SENDER" "$token" "$eml"
	offset=$(sylog_size bounced)
	out=$(send_dsn 198.51.101.9 mx-out.lists-relay.example "$eml" "$POST_SENDER")
	SENT_QID=$(queued_id "$out" || true)
	expect_outcome "$out" data 250 "the TS01 DSN"
	if ((${#ERRS[@]} == 0)); then
		expect_sympabounce "$SENT_QID" "$OWNER_ADDR"
		decision=$(bounced_decision "$token" "$offset" "Received bounce for email address <$member>" "No address found")
		record=$(member_bounce "$member")
		if [[ -n $record && $record != - ]]; then
			note "ts01 (no rule): Sympa COUNTS the delayed TS01 DSN as a bounce: bounce_subscriber for $member = '$record' (a 4.x.x status only halves the score)"
		else
			note "ts01 (no rule): Sympa did not record it: ${decision:-no decision logged}"
		fi
		file=$(grep -rlF -- "$token" "$SY/lib/bounce" "$SY/spool/bounce" 2>/dev/null | head -n 1)
		expect_tag "${file:-$SY/lib/bounce/$LIST_ADDR/$member}" "recipient=$member;" "action=delayed;" \
			"status=4.7.0;" "class=deferral;" "reason=complaint;" "provider=yahoo;" "rule=yahoo-ts01;" "signature=valid"
	fi

	# The rule, then a second TS01 for another member.
	member=gina@yahoo.example
	install_header_rules
	pf_reload "milter_header_checks = regexp:$PF_CONF/milter_header_checks"
	token=lwsympa-$RUN_ID-ts01b
	eml=$SY/msgs/ts01b.eml
	make_dsn ts01 "$member" "$POST_SENDER" "$token" "$eml"
	out=$(send_dsn 198.51.101.9 mx-out.lists-relay.example "$eml" "$POST_SENDER")
	SENT_QID=$(queued_id "$out" || true)
	expect_outcome "$out" data 250 "the TS01 DSN with the rule"
	if [[ $out == data$'\t'250* && -n $SENT_QID ]]; then
		[[ $(pf_wait_delivery "$SENT_QID") == sent ]] || ERRS+=("queue $SENT_QID: not sent")
		lines=$(grep -F " $SENT_QID: " "$PF_LOG" || true)
		grep -q 'milter-header-redirect' <<<"$lines" || ERRS+=("Postfix did not redirect the tagged deferral")
		grep -qF 'to=<deferrals@admin.example>' <<<"$lines" || ERRS+=("the deferral did not go to deferrals@admin.example")
		! grep -q 'relay=sympabounce' <<<"$lines" || ERRS+=("the deferral still reached Sympa")
		file=$(scn_sink_files "$token" | head -n 1)
		if [[ -z $file ]]; then
			ERRS+=("the redirected deferral is not at the sink")
		else
			expect_tag "$file" "recipient=$member;" "class=deferral;" "reason=complaint;" "rule=yahoo-ts01;"
		fi
		record=$(member_bounce "$member")
		[[ -z $record ]] || ERRS+=("Sympa recorded '$record' for $member despite the rule")
		note "ts01 (milter_header_checks REDIRECT on class=deferral): kept away from Sympa, $member has no bounce record"
	fi
	report_scn ts01-deferral "$start"
}

# The shipped milter_header_checks recipe
# (packaging/postfix/listwarden-milter-header-checks.regexp), with the
# redirect address put in: deferrals and fault=us bounces go to a person.
install_header_rules() {
	local shipped=$LW_IT_REPO/packaging/postfix/listwarden-milter-header-checks.regexp
	grep -c 'REDIRECT postmaster@lists.example.org$' "$shipped" | grep -qx 2 ||
		ERRS+=("$shipped: not the two REDIRECT rules expected")
	sed 's/REDIRECT postmaster@lists\.example\.org$/REDIRECT deferrals@admin.example/' "$shipped" >"$PF_CONF/milter_header_checks"
}

# d2. Bounces that are our fault (a Spamhaus listing, Microsoft's S3150
# block list, Microsoft 5.7.515 authentication) are tagged fault=us and,
# with the header rules of scn_ts01 in place, redirected: Sympa records
# nothing. A genuine 5.1.1 (fault=them) sent next still reaches Sympa and
# is recorded.
scn_fault_us() {
	local start token eml out lines file record i member status diag remote rule
	local -a cases=(
		"leo@members.example|5.7.1|554 5.7.1 Service unavailable; Client host [192.0.2.25] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/192.0.2.25|mx.members.example|spamhaus-listed"
		"kim@outlook.example|5.7.1|550 5.7.1 Unfortunately, messages from [192.0.2.25] weren't sent. Please contact your Internet service provider since part of their network is on our block list (S3150). [AM0EUR02FT001.eop-eur02.prod.protection.outlook.com]|outlook-example.mail.protection.outlook.com|microsoft-s3140-s3150"
		"max@outlook.example|5.7.515|550 5.7.515 Access denied, sending domain lists.example.org does not meet the required authentication level.|outlook-example.olc.protection.outlook.com|microsoft-5.7.515-auth"
	)
	start=$(now_ms)
	if [[ -z $POST_SENDER ]]; then
		ERRS+=("no signed sender from the post scenario")
		report_scn fault-us-redirected "$start"
		return 0
	fi
	for i in "${!cases[@]}"; do
		IFS='|' read -r member status diag remote rule <<<"${cases[$i]}"
		token=lwsympa-$RUN_ID-fault-$i
		eml=$SY/msgs/fault-$i.eml
		render "$SY_HOME/messages/dsn-fault.eml.in" "$eml" "TO=$POST_SENDER" "RCPT=$member" "MSGID=$token" \
			"DATE=$(LC_ALL=C date -R)" "POST_MSGID=$POST_MSGID" "SUBJECT=$POST_SUBJECT" \
			"STATUS=$status" "DIAG=$diag" "REMOTE=$remote"
		out=$(send_dsn 198.51.102.9 mx-out.lists-relay.example "$eml" "$POST_SENDER")
		SENT_QID=$(queued_id "$out" || true)
		expect_outcome "$out" data 250 "the $rule DSN"
		[[ $out == data$'\t'250* && -n $SENT_QID ]] || continue
		[[ $(pf_wait_delivery "$SENT_QID") == sent ]] || ERRS+=("queue $SENT_QID: not sent")
		lines=$(grep -F " $SENT_QID: " "$PF_LOG" || true)
		grep -q 'milter-header-redirect' <<<"$lines" || ERRS+=("$rule: Postfix did not redirect the fault=us bounce")
		grep -qF 'to=<deferrals@admin.example>' <<<"$lines" || ERRS+=("$rule: the bounce did not go to deferrals@admin.example")
		! grep -q 'relay=sympabounce' <<<"$lines" || ERRS+=("$rule: the bounce still reached Sympa")
		file=$(scn_sink_files "$token" | head -n 1)
		if [[ -z $file ]]; then
			ERRS+=("$rule: the redirected bounce is not at the sink")
		else
			expect_tag "$file" "recipient=$member;" "action=failed;" "rule=$rule;" "signature=valid; fault=us"
		fi
		record=$(member_bounce "$member")
		[[ -z $record ]] || ERRS+=("Sympa recorded '$record' for $member despite the rule")
	done
	# A genuine unknown user, with the rules in place: Sympa records it.
	member=mia@members.example
	token=lwsympa-$RUN_ID-fault-them
	eml=$SY/msgs/fault-them.eml
	make_dsn dsn-hard "$member" "$POST_SENDER" "$token" "$eml"
	out=$(send_dsn 198.51.100.9 mx1.members.example "$eml" "$POST_SENDER")
	SENT_QID=$(queued_id "$out" || true)
	expect_outcome "$out" data 250 "the 5.1.1 DSN with the rules"
	if ((${#ERRS[@]} == 0)); then
		expect_sympabounce "$SENT_QID" "$OWNER_ADDR"
		if record=$(wait_member_bounce "$member"); then
			[[ $record == *" 5.1.1" ]] || ERRS+=("Sympa recorded '$record' for $member, expected status 5.1.1")
		else
			ERRS+=("Sympa recorded no bounce for $member with the rules in place")
		fi
		expect_tag "$SY/lib/bounce/$LIST_ADDR/$member" "recipient=$member;" "class=hard;" "signature=valid; fault=them"
		note "fault-us: ${#cases[@]} fault=us bounces (Spamhaus, S3150, 5.7.515) redirected and not recorded; the genuine 5.1.1 for $member recorded '${record:-}'"
	fi
	report_scn fault-us-redirected "$start"
}

# e. A post forged with the list's address, as From: or as envelope
# sender, from an untrusted client is refused.
scn_forged_from() {
	local start token eml out
	start=$(now_ms)
	token=lwsympa-$RUN_ID-forged
	eml=$SY/msgs/forged.eml
	cat >"$eml" <<EOF
From: "Test list" <$LIST_ADDR>
To: $LIST_ADDR
Subject: Cheap watches $token
Date: $(LC_ALL=C date -R)
Message-ID: <$token@spam.example>

Forged as the list ($token).
EOF
	out=$(smtp_send 203.0.113.7 mail.spam.example stranger@spam.example "$LIST_ADDR" "$SY/msgs/forged-from.swaks" "$eml")
	expect_outcome "$out" data 550 "From: the list"
	out=$(smtp_send 203.0.113.7 mail.spam.example "$LIST_ADDR" "$LIST_ADDR" "$SY/msgs/forged-envelope.swaks" "$eml")
	expect_outcome "$out" mail 550 "MAIL FROM the list"
	! grep -qF -- "$token" "$SY/log/sympa_msg.log" || ERRS+=("Sympa saw the forged post")
	report_scn forged-from "$start"
}

# f. ARF complaints reach Sympa tagged; what Sympa does with them. The
# feedback loop reports to the return path the list mail carried (the
# signed owner address). Two forms of Original-Rcpt-To: in angle brackets
# (as in RFC 5965's examples) and bare. The same report to the unsigned
# owner address is refused: Sympa acts on reports there, and anyone could
# have written it.
scn_arf() {
	local start i j member orcpt omailfrom token eml out offset decision file status form signed
	local -a forms=(bracketed bare) members=(erin@members.example henry@members.example)
	start=$(now_ms)
	signed=$("$LW_BIN" sign -c "$LW_CONFIG" "$OWNER_ADDR" 2>/dev/null) || signed=""
	[[ $signed == prvs=* ]] || ERRS+=("listwarden sign $OWNER_ADDR printed '$signed'")
	for i in 0 1; do
		form=${forms[$i]} member=${members[$i]}
		orcpt=$member omailfrom=${POST_SENDER:-$OWNER_ADDR}
		[[ $form == bare ]] || orcpt="<$orcpt>" omailfrom="<$omailfrom>"
		token=lwsympa-$RUN_ID-arf-$form
		eml=$SY/msgs/arf-$form.eml
		render "$SY_HOME/messages/arf.eml.in" "$eml" "TO=$OWNER_ADDR" "RCPT=$member" "ORCPT=$orcpt" \
			"MSGID=$token" "DATE=$(LC_ALL=C date -R)" "POST_MSGID=$POST_MSGID" \
			"SUBJECT=$POST_SUBJECT" "RETURN_PATH=${POST_SENDER:-$OWNER_ADDR}" "OMAILFROM=$omailfrom"
		offset=$(sylog_size bounced)
		if [[ $form == bracketed ]]; then
			out=$(smtp_send 198.51.102.9 fbl.feedback.example.net fbl-bounces@feedback.example.net \
				"$OWNER_ADDR" "$SY/msgs/arf-unsigned.swaks" "$eml")
			expect_outcome "$out" data "550 5.7.1" "the ARF report to the unsigned owner address"
		fi
		out=$(smtp_send 198.51.102.9 fbl.feedback.example.net fbl-bounces@feedback.example.net \
			"$signed" "$SY/msgs/arf-$form.swaks" "$eml")
		SENT_QID=$(queued_id "$out" || true)
		expect_outcome "$out" data 250 "the ARF report ($form)"
		[[ $out == data$'\t'250* ]] || continue
		expect_sympabounce "$SENT_QID" "$OWNER_ADDR"
		decision=$(bounced_decision "$token" "$offset" "Feedback Report" "has been removed from" \
			"feedback report" "No address found")
		[[ -n $decision ]] || ERRS+=("bounced.pl logged no decision about the ARF report ($form)")
		# The tagged copy: in Sympa's spool (kept in bad/ when ignored), or
		# attached to the notice Sympa mailed (listmaster or owner).
		file=$(grep -rlF -- "$token" "$SY/spool/bounce" 2>/dev/null | head -n 1)
		if [[ -z $file ]]; then
			for ((j = 0; j < 50 && ${#file} == 0; j++)); do
				file=$(scn_sink_files "$token" | head -n 1)
				[[ -n $file ]] || sleep 0.1
			done
		fi
		expect_tag "${file:-$SY/spool/bounce/bad/(none)}" "recipient=$member;" "class=complaint;" \
			"reason=feedback;" "feedback_type=abuse" "list=$LIST;"
		status=$(member_bounce "$member")
		if [[ $status == - ]]; then status="unsubscribed"; else status="still subscribed"; fi
		# "err main::#160 > ... _twist#360 Ignoring Feedback Report MSG for
		# list Sympa::List <test@...>: REASON": keep what comes after the list.
		decision=$(sed -E 's/^[a-z]+ .*_twist(#[0-9]+)?(\(\))? //; s/Sympa::Message <[^>]*> //; s/Sympa::List <([^>]*)>/\1/' <<<"$decision")
		# Sympa's notice about it, if any, follows within seconds.
		for ((j = 0; j < 50; j++)); do
			file=$(scn_sink_files "$token" | xargs -r grep -h '^Subject: ' | grep -m 1 -iE 'feedback report|removed|unsubscribed' || true)
			if [[ -n $file ]]; then
				status="$status; a notice went out: '${file#Subject: }'"
				break
			fi
			sleep 0.1
		done
		note "arf ($form Original-Rcpt-To): reached Sympa tagged class=complaint; Sympa: '$decision'; $member $status"
	done
	report_scn arf-complaint "$start"
}

# VERP (verp_rate 100%): Sympa's bounce+MEMBER==a==DOMAIN==LIST@ senders
# are signed too. Sympa finds the member from the DSN's To: header, which
# the reporting MTA fills with the signed address: listwarden restores the
# plain one there as it does in the envelope.
scn_verp() {
	local start token eml out files want got i f sender rcpt lpart dom offset decision record m1 s1
	start=$(now_ms)
	printf '\nverp_rate 100%%\n' >>"$SY/lib/list_data/$LIST/config"
	token=lwsympa-$RUN_ID-verp
	eml=$SY/msgs/verp-post.eml
	cat >"$eml" <<EOF
From: Alice <alice@members.example>
To: $LIST_ADDR
Subject: VERP post $token
Date: $(LC_ALL=C date -R)
Message-ID: <$token@members.example>

A post sent with VERP ($token).
EOF
	out=$(smtp_send 203.0.113.50 mx.members.example alice@members.example "$LIST_ADDR" "$SY/msgs/verp-post.swaks" "$eml")
	expect_outcome "$out" data 250 "the VERP post"
	want=$(printf '%s\n' "${MEMBERS[@]}" | sort -u | tr '\n' ' ')
	for ((i = 0; i < SY_WAIT_TENTHS && ${#ERRS[@]} == 0; i++)); do
		files=$(scn_sink_files "$token")
		# shellcheck disable=SC2086
		[[ -n $files ]] && got=$(scn_sink_envelope $files | awk '$1 == "rcpt" { print tolower($2) }' | sort -u | tr '\n' ' ')
		[[ ${got:-} == "$want" ]] && break
		sleep 0.1
	done
	VERP_SENDERS=()
	if ((${#ERRS[@]} == 0)); then
		[[ ${got:-} == "$want" ]] || ERRS+=("VERP post: the sink got copies for '${got:-}', expected '$want'")
		for f in $files; do
			sender=$(scn_sink_envelope "$f" | awk '$1 == "mail" { print $2; exit }')
			rcpt=$(scn_sink_envelope "$f" | awk '$1 == "rcpt" { print tolower($2) }')
			if [[ $(wc -l <<<"$rcpt") != 1 ]]; then
				ERRS+=("VERP copy $f has several recipients")
				continue
			fi
			lpart=${rcpt%@*} dom=${rcpt#*@}
			[[ ${sender,,} == prvs=??????????=bounce+"$lpart==a==$dom==$LIST@$DOMAIN" ]] ||
				ERRS+=("VERP copy for $rcpt left with <$sender>, expected prvs=...=bounce+$lpart==a==$dom==$LIST@$DOMAIN")
			"$LW_BIN" verify -c "$LW_CONFIG" "$sender" >/dev/null 2>&1 || ERRS+=("listwarden verify <$sender>: not valid")
			VERP_SENDERS+=("$rcpt"$'\t'"$sender")
			FB_COPY[$rcpt]=$f
			LISTS_COPIES+=("$f")
		done
	fi
	m1=carol@members.example
	s1=$(printf '%s\n' "${VERP_SENDERS[@]}" | awk -F '\t' -v m="$m1" '$1 == m { print $2 }')
	if ((${#ERRS[@]} == 0)) && [[ -n $s1 ]]; then
		# listwarden restores the plain address in the envelope and in the
		# DSN's To:, where Sympa reads the VERP member.
		token=lwsympa-$RUN_ID-verp1
		eml=$SY/msgs/verp1.eml
		make_dsn dsn-hard "$m1" "$s1" "$token" "$eml"
		offset=$(sylog_size bounced)
		out=$(send_dsn 198.51.100.9 mx1.members.example "$eml" "$s1")
		SENT_QID=$(queued_id "$out" || true)
		expect_outcome "$out" data 250 "the VERP bounce"
		expect_sympabounce "$SENT_QID" "$(sed -E 's/^prvs=[^=]+=//' <<<"$s1")"
		if record=$(wait_member_bounce "$m1"); then
			[[ $record == *" 5.1.1" ]] || ERRS+=("Sympa recorded '$record' for $m1, expected status 5.1.1")
			note "verp: Sympa recorded the VERP bounce for $m1 ('$record')"
		else
			decision=$(bounced_decision "$token" "$offset" "Received bounce for email address $m1" "No address found")
			ERRS+=("Sympa recorded no VERP bounce for $m1 ($decision)")
		fi
		expect_tag "$SY/lib/bounce/$LIST_ADDR/$m1" "recipient=$m1;" "class=hard;" "signature=valid"
		grep -qiF "To: bounce+${m1%@*}==a==" "$SY/lib/bounce/$LIST_ADDR/$m1" 2>/dev/null ||
			ERRS+=("the stored VERP bounce's To: header is not the plain VERP address")
	elif ((${#ERRS[@]} == 0)); then
		ERRS+=("no VERP sender for $m1")
	fi
	report_scn verp-bounce "$start"
}

# d. FORGED_COUNT forged bounces to the list's bounce addresses from many
# networks are refused at RCPT and never reach Sympa; real (validly
# signed) bounces sent during the flood get through and are recorded.
scn_flood() {
	local start t0 plan results forged expired k m n tf took rate shield unexpected
	local -a reals=(frank@members.example ivan@members.example judy@members.example)
	start=$(now_ms)
	if [[ -z $POST_SENDER ]]; then
		ERRS+=("no signed sender from the post scenario")
		report_scn forged-flood "$start"
		return 0
	fi
	forged=$("$LW_IT_PYTHON" "$LW_IT_HOME/lib/prvs.py" forge "$POST_SENDER")
	expired=$("$LW_IT_PYTHON" "$LW_IT_HOME/lib/prvs.py" sign "$LW_KEY_FILE" "$OWNER_ADDR" \
		--validity "$(lw_validity_days)" --days-ago 20)
	for k in "${!reals[@]}"; do
		make_dsn dsn-hard "${reals[$k]}" "$POST_SENDER" "lwsympa-$RUN_ID-real$k" "$SY/msgs/real$k.eml"
	done
	plan=$SY/flood-plan.tsv
	results=$SY/flood-results.tsv
	# 20 bounces per /24 (one SMTP session each); the recipients cycle
	# through the plain return path, an unsigned VERP address, a tag with
	# a wrong MAC and an expired tag; every third sender is MAILER-DAEMON@.
	# The real bounces sit at 1/4, 1/2 and 3/4 of the plan, from their own
	# networks.
	awk -v n="$FORGED_COUNT" -v owner="$OWNER_ADDR" -v forged="$forged" -v expired="$expired" \
		-v list="$LIST" -v domain="$DOMAIN" -v real="$POST_SENDER" -v msgs="$SY/msgs" 'BEGIN {
		for (i = 0; i < n; i++) {
			for (k = 0; k < 3; k++)
				if (i == int(n * (k + 1) / 4))
					printf "real%d\t192.0.2.%d\t\t%s\tfile:%s/real%d.eml\n", k, 20 + k, real, msgs, k
			net = int(i / 20)
			client = sprintf("198.%d.%d.7", 18 + int(net / 256), net % 256)
			kind = i % 4
			if (kind == 0) rcpt = owner
			else if (kind == 1) rcpt = sprintf("bounce+victim%d==a==example.net==%s@%s", i, list, domain)
			else if (kind == 2) rcpt = forged
			else rcpt = expired
			sender = (i % 3 == 0) ? sprintf("MAILER-DAEMON@mx%d.example.net", net) : ""
			printf "forged%05d\t%s\t%s\t%s\tplain\n", i, client, sender, rcpt
		}
	}' >"$plan"
	FORGED_SENT=$(grep -c '^forged' "$plan")
	REAL_SENT=${#reals[@]}
	say "flood: $FORGED_SENT forged bounces and $REAL_SENT real ones"
	t0=$(now_ms)
	if ! timeout 600 "$LW_IT_PYTHON" "$LW_IT_HOME/lib/replay-smtp.py" 127.0.0.1 "$SMTPD_PORT" \
		"$plan" "$results" --threads 8 --per-session 20 >"$SY/flood-replay.log" 2>&1; then
		ERRS+=("replay-smtp.py failed: $(tail -n 3 "$SY/flood-replay.log" | tr '\n' '|')")
	fi
	took=$(($(now_ms) - t0))
	FORGED_REFUSED=$(awk -F '\t' '$1 ~ /^forged/ && $2 ~ /^rcpt-(reject|tempfail)$/' "$results" | wc -l)
	tf=$(awk -F '\t' '$1 ~ /^forged/ && $2 == "rcpt-tempfail"' "$results" | wc -l)
	((FORGED_REFUSED == FORGED_SENT)) ||
		ERRS+=("only $FORGED_REFUSED of $FORGED_SENT forged bounces were refused at RCPT: $(awk -F '\t' '$1 ~ /^forged/ { print $2 }' "$results" | sort | uniq -c | tr '\n' ' ')")
	for k in "${!reals[@]}"; do
		awk -F '\t' -v id="real$k" '$1 == id && $2 == "accepted" { ok = 1 } END { exit !ok }' "$results" ||
			ERRS+=("the real bounce for ${reals[$k]} was not accepted: $(awk -F '\t' -v id="real$k" '$1 == id' "$results")")
	done
	# Nothing of the flood may reach Postfix's queue or Sympa: no forged
	# Message-ID in Postfix's log, Sympa's log, spool or bounce store.
	FORGED_REACHED=$(
		{
			grep -ohE 'forged[0-9]+@replay\.test' "$PF_LOG" "$SY/log/bounced.log" || true
			grep -rohE 'forged[0-9]+@replay\.test' "$SY/spool" "$SY/lib/bounce" || true
		} | sort -u | wc -l
	)
	((FORGED_REACHED == 0)) || ERRS+=("$FORGED_REACHED forged bounces reached Postfix's queue or Sympa")
	REAL_RECORDED=0
	for m in "${reals[@]}"; do
		if wait_member_bounce "$m" >/dev/null; then
			REAL_RECORDED=$((REAL_RECORDED + 1))
			expect_tag "$SY/lib/bounce/$LIST_ADDR/$m" "recipient=$m;" "class=hard;" "signature=valid"
		else
			ERRS+=("Sympa recorded no bounce for $m (real bounce sent during the flood)")
		fi
	done
	# Only members who really bounced have a bounce record.
	unexpected=$(sympa_sql "SELECT user_subscriber FROM subscriber_table WHERE list_subscriber='$LIST' AND IFNULL(bounce_subscriber,'') != '' AND user_subscriber NOT IN ('bob@members.example','dave@yahoo.example','carol@members.example','alice@members.example','frank@members.example','ivan@members.example','judy@members.example','mia@members.example');" | tr '\n' ' ')
	[[ -z $unexpected ]] || ERRS+=("unexpected bounce records for: $unexpected")
	lw_fetch_metrics "$METRICS_PORT" "$SY/metrics.txt" || true
	shield=$(lw_metric_sum "$SY/metrics.txt" listwarden_shield_active "list=\"$LIST\"")
	rate=$((FORGED_SENT * 1000 / (took > 0 ? took : 1)))
	n=$(awk -F '\t' '$1 ~ /^real/ { printf "%s@%.1fs ", $1, $4 / 1000 }' "$results")
	note "flood: $FORGED_SENT forged in $((took / 1000)).$((took % 1000 / 100)) s ($rate/s): $FORGED_REFUSED refused at RCPT ($tf with 4xx), $FORGED_REACHED reached Postfix/Sympa; real bounces accepted at ${n% } and $REAL_RECORDED/$REAL_SENT recorded; shield up: $shield"
	report_scn forged-flood "$start"
}

# Nothing may be left in Postfix's queue (deferred, held or stuck).
scn_queue_empty() {
	local start i out
	start=$(now_ms)
	for ((i = 0; i < LW_IT_WAIT_TENTHS; i++)); do
		out=$(pf_queue_empty) && break
		sleep 0.1
	done
	((i < LW_IT_WAIT_TENTHS)) || ERRS+=("the Postfix queue is not empty: $(head -n 8 <<<"$out" | tr '\n' '|')")
	report_scn queue-empty "$start"
}
