# shellcheck shell=bash
# One-click unsubscribe for a list-manager list (Sympa, Mailman 3), through
# the private Postfix with the milters in the shipped order:
#
#   Mailman-style copy ──▶ smtpd BASE+32 ──milter──▶ listwarden (signs, one-click headers)
#   (trusted 127.0.0.1,                   ──milter──▶ opendkim (signs) ──▶ smtp-sink
#    VERP sender, one member)
#   POST its URL ──▶ listwarden's one-click listener ──▶ a job in feedback.queue
#
# oc_setup (after exp_setup, which starts opendkim and the one-click
# listener, before listwarden and Postfix start) adds a mailman3 list with
# unsubscribe_url and a feedback: section to the test config, and a smtpd
# listener whose smtpd_milters are the shipped main.cf line (listwarden
# first, opendkim last) with the test's sockets. check_list_manager_one_click
# sends one copy and checks the delivered headers, the DKIM signature
# (lib/dkimcheck.py, dkimpy) and the POST. Needs the expander's setup
# (LW_IT_EXPANDER=1): opendkim and the listener come from there.
# Uses SMTPD_PORT, MILTER_PORT, SINK_DIR, PF_CONF, LW_BIN, LW_CONFIG,
# LW_LOG, LW_IT_DIR, DKIM_* and EXP_UNSUB_PORT from the harness.
# shellcheck disable=SC2153

OC_LIST=mm
OC_DOMAIN=lists.example.org
OC_URL=https://$OC_DOMAIN/mm-unsubscribe
OC_MEMBER=oc-member@site77.example.net
OC_PORT="" OC_DIR="" OC_QUEUE=""

oc_setup() {
	[[ ${EXP_ENABLED:-0} == 1 ]] || return 0
	local tmp=$LW_CONFIG.tmp shipped milters
	OC_PORT=$(($1 + 32))
	require_free_port "$OC_PORT" "one-click smtpd"
	OC_DIR=$LW_IT_DIR/oneclick
	OC_QUEUE=$OC_DIR/queue
	mkdir -p "$OC_DIR/sent"
	printf 'secret\n' >"$OC_DIR/mailman.pass"
	chmod 0600 "$OC_DIR/mailman.pass"
	awk -v list="$OC_LIST@$OC_DOMAIN" -v url="$OC_URL" '
		{ print }
		$0 == "lists:" && !done {
			print "  # A Mailman 3 list with one-click (integration/lib/oneclick.sh)."
			print "  - address: " list
			print "    preset: mailman3"
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
	say "one-click: $OC_LIST@$OC_DOMAIN (mailman3), smtpd 127.0.0.1:$OC_PORT with milters $milters"
}

# The delivered copy checks out (headers, DKIM) and its URL queues one job.
check_list_manager_one_click() {
	[[ ${EXP_ENABLED:-0} == 1 ]] || return 0
	local start errors=() token=lwit-$LW_IT_RUN_ID-oneclick eml=$OC_DIR/sent/copy.eml
	local verp=$OC_LIST-bounces+${OC_MEMBER%@*}=${OC_MEMBER#*@}@$OC_DOMAIN
	local file="" i hdrs unsub out url path status n bad
	start=$(now_ms)
	cat >"$eml" <<EOF
From: Alice <alice@example.com>
To: $OC_LIST@$OC_DOMAIN
Subject: one-click $token
Date: $(LC_ALL=C date -R)
Message-ID: <$token@$OC_DOMAIN>
List-Id: <$OC_LIST.$OC_DOMAIN>
List-Post: <mailto:$OC_LIST@$OC_DOMAIN>
List-Unsubscribe: <https://$OC_DOMAIN/mailman3/lists/$OC_LIST.$OC_DOMAIN>,
 <mailto:$OC_LIST-leave@$OC_DOMAIN>
List-Unsubscribe-Post: List-Unsubscribe=One-Click
Feedback-ID: forged:by:the:poster

A list manager's per-member copy ($token).
EOF
	# swaks ends the data with CRLF . CRLF itself: no last newline.
	swaks --server 127.0.0.1 --port "$OC_PORT" --timeout 30 --helo "$OC_DOMAIN" \
		--from "$verp" --to "$OC_MEMBER" --data - < <(head -c -1 "$eml") >"$OC_DIR/sent/copy.swaks" 2>&1 || true
	grep -qE '^<- +250 .*queued as' "$OC_DIR/sent/copy.swaks" ||
		errors+=("Postfix did not queue the copy: $(grep -E '^<(-|\*\*) ' "$OC_DIR/sent/copy.swaks" | tail -n 2 | tr '\n' '|')")
	for ((i = 0; i < 300; i++)); do
		file=$({ grep -rlF -- "$token" "$SINK_DIR" 2>/dev/null || true; } | head -n 1)
		[[ -z $file ]] || break
		sleep 0.1
	done
	if [[ -z $file ]]; then
		report list-manager-one-click "$start" "${errors[@]}" "no copy reached the sink within 30s"
		return 0
	fi
	# Let Postfix finish writing before the file is read whole.
	for ((i = 0; i < 50; i++)); do pf_queue_empty >/dev/null && break; sleep 0.1; done
	grep -qiE "^X-Mail-Args: <?prvs=[0-9a-f]{10}=$OC_LIST-bounces\+" "$file" ||
		errors+=("the envelope sender is not signed: $(grep -i '^X-Mail-Args:' "$file")")
	hdrs=$(scn_sink_headers "$file")
	n=$(grep -ci '^List-Unsubscribe:' <<<"$hdrs" || true)
	((n == 1)) || errors+=("$n List-Unsubscribe fields, expected 1")
	unsub=$(grep -i '^List-Unsubscribe:' <<<"$hdrs" | head -n 1)
	url=$(grep -oE "<$OC_URL\?[^>]*>" <<<"$unsub" | tr -d '<>' | head -n 1 || true)
	[[ $url == "$OC_URL?list=$OC_LIST&m=$OC_MEMBER&t=lw-"* ]] ||
		errors+=("List-Unsubscribe has no one-click URL for $OC_MEMBER: $unsub")
	[[ $unsub == *"<mailto:$OC_LIST-leave@$OC_DOMAIN>"* ]] ||
		errors+=("List-Unsubscribe lost the list manager's mailto: $unsub")
	[[ $unsub != *"/mailman3/lists/"* ]] ||
		errors+=("List-Unsubscribe kept the list manager's https URI: $unsub")
	n=$(grep -ci '^List-Unsubscribe-Post: List-Unsubscribe=One-Click$' <<<"$hdrs" || true)
	((n == 1 && $(grep -ci '^List-Unsubscribe-Post:' <<<"$hdrs") == 1)) ||
		errors+=("List-Unsubscribe-Post: $(grep -i '^List-Unsubscribe-Post:' <<<"$hdrs" | tr '\n' '|')")
	[[ $(grep -i '^Feedback-ID:' <<<"$hdrs") == "Feedback-ID: $OC_LIST.$OC_DOMAIN:$OC_DOMAIN:listwarden" ]] ||
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
		[[ -z $(oc_jobs) ]] || errors+=("a GET queued a job")
		status=$(exp_http POST "$path" "List-Unsubscribe=One-Click")
		[[ $status == 200 ]] || errors+=("POST $path answered $status, expected 200")
		status=$(exp_http POST "$path" "List-Unsubscribe=One-Click")
		[[ $status == 200 ]] || errors+=("a repeated POST answered $status, expected 200")
		bad=${path%?????}aaaaa
		status=$(exp_http POST "$bad" "List-Unsubscribe=One-Click")
		[[ $status == 403 ]] || errors+=("POST with a broken token answered $status, expected 403")
		n=$(oc_jobs | wc -l)
		((n == 1)) || errors+=("$n jobs in $OC_QUEUE, expected 1")
		grep -qF "\"member\": \"$OC_MEMBER\"" "$(oc_jobs | head -n 1)" 2>/dev/null &&
			grep -qF "\"list\": \"$OC_LIST\"" "$(oc_jobs | head -n 1)" &&
			grep -qF '"action": "unsubscribe"' "$(oc_jobs | head -n 1)" ||
			errors+=("the job is not (list $OC_LIST, member $OC_MEMBER, unsubscribe): $(tr -d '\n' <"$(oc_jobs | head -n 1)" 2>/dev/null)")
		grep -qF "one-click unsubscribe list=$OC_LIST member=$OC_MEMBER queued=true client=127.0.0.1" "$LW_LOG" ||
			errors+=("no audit line in the log")
	fi
	report list-manager-one-click "$start" "${errors[@]}"
}

# The queued job files.
oc_jobs() {
	find "$OC_QUEUE" -maxdepth 1 -name '*.json' 2>/dev/null || true
}
