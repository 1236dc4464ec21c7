# shellcheck shell=bash
# One-click unsubscribe for a list-manager list (Sympa, Mailman 3), through
# the private Postfix with the milters in the shipped order:
#
#   Mailman-style copy ──▶ smtpd BASE+33 ──milter──▶ listwarden (signs, one-click headers)
#   (trusted 127.0.0.1,                   ──milter──▶ opendkim (signs) ──▶ smtp-sink
#    VERP sender, one member)
#   POST its URL ──▶ listwarden's one-click listener ──▶ a job in feedback.queue
#
# oc_setup (after exp_setup, which starts opendkim and the one-click
# listener, before listwarden and Postfix start) adds a mailman3 and a sympa
# list with unsubscribe_url and a feedback: section to the test config, and a smtpd
# listener whose smtpd_milters are the shipped main.cf line (listwarden
# first, opendkim last) with the test's sockets. check_list_manager_one_click
# sends one copy per list, written as Mailman 3.3 and Sympa 6.2 write
# theirs (their List-Unsubscribe, their VERP sender), and checks the
# delivered headers, the DKIM signature (lib/dkimcheck.py, dkimpy) and the
# POST. Needs the expander's setup
# (LW_IT_EXPANDER=1): opendkim and the listener come from there.
# Uses SMTPD_PORT, MILTER_PORT, SINK_DIR, PF_CONF, LW_BIN, LW_CONFIG,
# LW_LOG, LW_IT_DIR, DKIM_* and EXP_UNSUB_PORT from the harness.
# shellcheck disable=SC2153

OC_DOMAIN=lists.example.org
OC_URL=https://$OC_DOMAIN/unsubscribe
# A Mailman 3 list and a Sympa list, a member each.
OC_MM_LIST=mm
OC_MM_MEMBER=oc-member@site77.example.net
OC_SY_LIST=sy
OC_SY_MEMBER=oc-sympa@site78.example.net
OC_PORT="" OC_DIR="" OC_QUEUE=""

oc_setup() {
	[[ ${EXP_ENABLED:-0} == 1 ]] || return 0
	local tmp=$LW_CONFIG.tmp shipped milters
	OC_PORT=$(($1 + 33))
	require_free_port "$OC_PORT" "one-click smtpd"
	OC_DIR=$LW_IT_DIR/oneclick
	OC_QUEUE=$OC_DIR/queue
	mkdir -p "$OC_DIR/sent"
	printf 'secret\n' >"$OC_DIR/mailman.pass"
	chmod 0600 "$OC_DIR/mailman.pass"
	awk -v mm="$OC_MM_LIST@$OC_DOMAIN" -v sy="$OC_SY_LIST@$OC_DOMAIN" -v url="$OC_URL" '
		{ print }
		$0 == "lists:" && !done {
			print "  # A Mailman 3 and a Sympa list with one-click (integration/lib/oneclick.sh)."
			print "  - address: " mm
			print "    preset: mailman3"
			print "    unsubscribe_url: \"" url "\""
			print "  - address: " sy
			print "    preset: sympa"
			print "    unsubscribe_url: \"" url "\""
			done = 1
		}' "$LW_CONFIG" >"$tmp"
	# The worker is not run here (no Mailman): the job is the result.
	cat >>"$tmp" <<EOF
# One-click for list-manager lists queues feedback jobs
# (integration/lib/oneclick.sh); nobody sends reports to this address.
feedback:
  addresses: ["fbl-nobody@$OC_DOMAIN"]
  queue: "$OC_QUEUE"
  action: count_only
  mailman3: {url: "http://127.0.0.1:9/3.1", user: restadmin, password_file: "$OC_DIR/mailman.pass"}
EOF
	mv -- "$tmp" "$LW_CONFIG"
	"$LW_BIN" check-config "$LW_CONFIG" >"$OC_DIR/check-config.log" 2>&1 || {
		cat "$OC_DIR/check-config.log" >&2
		die "listwarden check-config rejected the config with the one-click list"
	}
	# The shipped order (packaging/postfix/main.cf): listwarden first,
	# opendkim last, with this run's milter port and opendkim socket.
	shipped=$(grep -E '^#smtpd_milters = unix:/listwarden/milter\.sock, unix:/opendkim/opendkim\.sock$' \
		"$LW_IT_REPO/packaging/postfix/main.cf") ||
		die "packaging/postfix/main.cf: no '#smtpd_milters = <listwarden>, <opendkim>' line"
	milters=${shipped#\#smtpd_milters = }
	milters=${milters/unix:\/listwarden\/milter.sock/inet:127.0.0.1:$MILTER_PORT}
	milters=${milters/unix:\/opendkim\/opendkim.sock/unix:$DKIM_SOCKET}
	milters=${milters// /}
	cat >>"$PF_CONF/master.cf" <<EOF
# One-click for list-manager lists (integration/lib/oneclick.sh): the
# list server's SMTP submission with listwarden, then opendkim.
127.0.0.1:$OC_PORT inet n - n - - smtpd
  -o syslog_name=postfix/oneclick
  -o smtpd_milters=$milters
EOF
	say "one-click: $OC_MM_LIST@ (mailman3) and $OC_SY_LIST@ (sympa), smtpd 127.0.0.1:$OC_PORT with milters $milters"
}

check_list_manager_one_click() {
	[[ ${EXP_ENABLED:-0} == 1 ]] || return 0
	local m=$OC_MM_MEMBER s=$OC_SY_MEMBER
	# Mailman 3.3's fields, and its VERP sender.
	oc_check_copy list-manager-one-click-mailman "$OC_MM_LIST" "$m" \
		"$OC_MM_LIST-bounces+${m%@*}=${m#*@}@$OC_DOMAIN" \
		"<https://$OC_DOMAIN/mailman3/lists/$OC_MM_LIST.$OC_DOMAIN>,"$'\n'" <mailto:$OC_MM_LIST-leave@$OC_DOMAIN>" \
		"<mailto:$OC_MM_LIST-leave@$OC_DOMAIN>"
	# Sympa 6.2's field (the robot's address, the command in the subject),
	# and its shared VERP sender.
	oc_check_copy list-manager-one-click-sympa "$OC_SY_LIST" "$s" \
		"bounce+${s%@*}==a==${s#*@}==$OC_SY_LIST@$OC_DOMAIN" \
		"<mailto:sympa@$OC_DOMAIN?subject=unsubscribe%20$OC_SY_LIST>" \
		"<mailto:sympa@$OC_DOMAIN?subject=unsubscribe%20$OC_SY_LIST>"
}

# One copy of list $2 for member $3 from VERP sender $4 with
# List-Unsubscribe value $5: the delivered copy has the one-click fields
# (and the mailto $6 kept), verifies with dkimpy, and its URL queues one
# job for the member. Reports as check $1.
oc_check_copy() {
	local name=$1 list=$2 member=$3 verp=$4 theirs=$5 mailto=$6
	local start errors=() token=lwit-$LW_IT_RUN_ID-$1 eml=$OC_DIR/sent/$1.eml
	local file="" i hdrs unsub out url path status n bad job text answers=""
	start=$(now_ms)
	cat >"$eml" <<EOF
From: Alice <alice@example.com>
To: $list@$OC_DOMAIN
Subject: one-click $token
Date: $(LC_ALL=C date -R)
Message-ID: <$token@$OC_DOMAIN>
List-Id: <$list.$OC_DOMAIN>
List-Post: <mailto:$list@$OC_DOMAIN>
List-Unsubscribe: $theirs
List-Unsubscribe-Post: List-Unsubscribe=One-Click
Feedback-ID: forged:by:the:poster

A list manager's per-member copy ($token).
EOF
	# swaks ends the data with CRLF . CRLF itself: no last newline.
	swaks --server 127.0.0.1 --port "$OC_PORT" --timeout 30 --helo "$OC_DOMAIN" \
		--from "$verp" --to "$member" --data - < <(head -c -1 "$eml") >"$OC_DIR/sent/$name.swaks" 2>&1 || true
	grep -qE '^<- +250 .*queued as' "$OC_DIR/sent/$name.swaks" ||
		errors+=("Postfix did not queue the copy: $(grep -E '^<(-|\*\*) ' "$OC_DIR/sent/$name.swaks" | tail -n 2 | tr '\n' '|')")
	for ((i = 0; i < 300; i++)); do
		file=$({ grep -rlF -- "$token" "$SINK_DIR" 2>/dev/null || true; } | head -n 1)
		[[ -z $file ]] || break
		sleep 0.1
	done
	if [[ -z $file ]]; then
		report "$name" "$start" "${errors[@]}" "no copy reached the sink within 30s"
		return 0
	fi
	# Let Postfix finish writing before the file is read whole.
	for ((i = 0; i < 50; i++)); do pf_queue_empty >/dev/null && break; sleep 0.1; done
	grep -qiE "^X-Mail-Args: <?prvs=[0-9a-f]{10}=${verp%%+*}\+" "$file" ||
		errors+=("the envelope sender is not signed: $(grep -i '^X-Mail-Args:' "$file")")
	hdrs=$(scn_sink_headers "$file")
	n=$(grep -ci '^List-Unsubscribe:' <<<"$hdrs" || true)
	((n == 1)) || errors+=("$n List-Unsubscribe fields, expected 1")
	unsub=$(grep -i '^List-Unsubscribe:' <<<"$hdrs" | head -n 1)
	url=$(grep -oE "<$OC_URL\?[^>]*>" <<<"$unsub" | tr -d '<>' | head -n 1 || true)
	[[ $url == "$OC_URL?list=$list&m=$member&t=lw-"* ]] ||
		errors+=("List-Unsubscribe has no one-click URL for $member: $unsub")
	[[ $unsub == *", $mailto"* ]] ||
		errors+=("List-Unsubscribe lost the list manager's mailto: $unsub")
	(($(grep -o 'https://' <<<"$unsub" | wc -l) == 1)) ||
		errors+=("List-Unsubscribe kept another https URI: $unsub")
	n=$(grep -ci '^List-Unsubscribe-Post: List-Unsubscribe=One-Click$' <<<"$hdrs" || true)
	((n == 1 && $(grep -ci '^List-Unsubscribe-Post:' <<<"$hdrs") == 1)) ||
		errors+=("List-Unsubscribe-Post: $(grep -i '^List-Unsubscribe-Post:' <<<"$hdrs" | tr '\n' '|')")
	[[ $(grep -i '^Feedback-ID:' <<<"$hdrs") == "Feedback-ID: $list.$OC_DOMAIN:$OC_DOMAIN:listwarden" ]] ||
		errors+=("Feedback-ID: $(grep -i '^Feedback-ID:' <<<"$hdrs" | tr '\n' '|')")
	# dkimpy, independent of opendkim: the signature verifies and covers
	# (oversigned) List-Unsubscribe, List-Unsubscribe-Post and Feedback-ID.
	out=$("$LW_IT_PYTHON" "$LW_IT_HOME/lib/dkimcheck.py" "$DKIM_DIR/keys/$DKIM_SELECTOR.txt" \
		"$DKIM_DOMAIN" "$DKIM_SELECTOR" "$file" 2>&1) || errors+=("dkimcheck.py failed: $(tail -n 3 <<<"$out")")
	grep -q '^ok ' <<<"$out" || errors+=("dkimpy: $(grep '^bad ' <<<"$out" || true)")
	(($(grep -c '^control ok' <<<"$out" || true) == 2)) ||
		errors+=("the forgery controls:" "$(grep '^control' <<<"$out" || true)")
	if [[ -n $url ]]; then
		path=/${url#https://*/}
		status=$(exp_http GET "$path" "")
		[[ $status != 2* ]] || errors+=("GET $path answered $status")
		[[ -z $(oc_jobs "$member") ]] || errors+=("a GET queued a job")
		status=$(exp_http POST "$path" "List-Unsubscribe=One-Click")
		[[ $status == 200 ]] || errors+=("POST $path answered $status, expected 200")
		answers=$status
		status=$(exp_http POST "$path" "List-Unsubscribe=One-Click")
		[[ $status == 200 ]] || errors+=("a repeated POST answered $status, expected 200")
		answers+=/$status
		bad=${path%?????}aaaaa
		status=$(exp_http POST "$bad" "List-Unsubscribe=One-Click")
		[[ $status == 403 ]] || errors+=("POST with a broken token answered $status, expected 403")
		answers+=/$status
		n=$(oc_jobs "$member" | wc -l)
		((n == 1)) || errors+=("$n jobs for $member in $OC_QUEUE, expected 1")
		job=$(oc_jobs "$member" | head -n 1)
		[[ -n $job ]] && text=$(tr -d '\n' <"$job") || text=""
		[[ $text == *"\"list\": \"$list\""* && $text == *"\"member\": \"$member\""* &&
			$text == *'"action": "unsubscribe"'* ]] ||
			errors+=("the job is not (list $list, member $member, unsubscribe): ${text:-none}")
		grep -qF "one-click unsubscribe list=$list member=$member queued=true client=127.0.0.1" "$LW_LOG" ||
			errors+=("no audit line in the log")
	fi
	say "$name: copy via listwarden then opendkim: $(grep -c '^ok ' <<<"$out" || true) of 1 verifies with dkimpy; POSTs answered ${answers:-nothing} (good, repeat, broken token); $(oc_jobs "$member" | wc -l) job(s) queued for $member"
	report "$name" "$start" "${errors[@]}"
}

# The queued job files that name member $1.
oc_jobs() {
	[[ -d $OC_QUEUE ]] || return 0
	find "$OC_QUEUE" -maxdepth 1 -name '*.json' -exec grep -lF -- "\"member\": \"$1\"" {} + 2>/dev/null || true
}
