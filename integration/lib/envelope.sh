# shellcheck shell=bash
# Envelope readings through real Postfix: every way of writing a protected
# address that Postfix reads as the plain address (a comment, spaces around
# the @, a source route of any length, quotes) must be refused exactly as
# the plain form is. Each case sends its MAIL and RCPT arguments byte for
# byte (lib/rawsmtp.py) from an untrusted client.

# Each line: name | MAIL argument | RCPT argument | expected stage | expected reply prefix.
# The null sender to an unsigned bounce address is refused at RCPT; a list
# address as the envelope sender is refused at MAIL.
ENV_CASES=$(
	cat <<'EOF'
plain-rcpt|<>|<members-bounces@lists.example.org>|rcpt|550 5.7.1
comment-in-local|<>|<members-bounces(x)@lists.example.org>|rcpt|550 5.7.1
space-before-at|<>|<members-bounces @lists.example.org>|rcpt|550 5.7.1
space-after-at|<>|<members-bounces@ lists.example.org>|rcpt|550 5.7.1
comment-after-domain|<>|<members-bounces@lists.example.org(x)>|rcpt|550 5.7.1
leading-comment|<>|<(c) members-bounces@lists.example.org>|rcpt|550 5.7.1
quoted-local|<>|<"members-bounces"@lists.example.org>|rcpt|550 5.7.1
upper-case|<>|<MEMBERS-BOUNCES@Lists.Example.Org.>|rcpt|550 5.7.1
short-route|<>|<@a.example:members-bounces@lists.example.org>|rcpt|550 5.7.1
long-route|<>|<@r1.example,@r2.example,@r3.example,@r4.example,@r5.example,@r6.example,@r7.example,@r8.example,@r9.example,@r10.example,@r11.example,@r12.example:members-bounces@lists.example.org>|rcpt|550 5.7.1
spaced-route|<>|< @a.example , @b.example : members-bounces@lists.example.org >|rcpt|550 5.7.1
null-with-comment|<(x)>|<members-bounces@lists.example.org>|rcpt|550 5.7.1
plain-mail|<members@lists.example.org>|<bob@example.com>|mail|550 5.7.1
comment-in-sender|<members(x)@lists.example.org>|<bob@example.com>|mail|550 5.7.1
space-in-sender|<members @lists.example.org>|<bob@example.com>|mail|550 5.7.1
route-in-sender|<@a.example,@b.example:members@lists.example.org>|<bob@example.com>|mail|550 5.7.1
quoted-sender|<"members"@lists.example.org>|<bob@example.com>|mail|550 5.7.1
dotdot-extension|<>|<members-bounces+a..b@lists.example.org>|rcpt|550 5.7.1
trailing-dot-extension|<>|<members-bounces+x.@lists.example.org>|rcpt|550 5.7.1
quoted-space-extension|<>|<"members-bounces+a b"@lists.example.org>|rcpt|550 5.7.1
dotdot-extension-sender|<members+a..b@lists.example.org>|<bob@example.com>|mail|550 5.7.1
EOF
)

check_envelope_readings() {
	local start errors=() name mail rcpt stage want out got_stage got_reply n=0 client
	start=$(now_ms)
	while IFS='|' read -r name mail rcpt stage want; do
		[[ -n $name ]] || continue
		n=$((n + 1))
		# Each case from its own network, so no budget is shared.
		client=198.19.$n.7
		out=$("$LW_IT_PYTHON" "$LW_IT_HOME/lib/rawsmtp.py" "$SMTPD_PORT" "$client" "$mail" "$rcpt" 2>&1) ||
			out="error	$out"
		got_stage=${out%%$'\t'*}
		got_reply=${out#*$'\t'}
		# Postfix's own 5xx refusal of the syntax is as good: nothing is delivered.
		if [[ $got_stage == "$stage" && $got_reply == "$want"* ]]; then
			continue
		elif [[ $got_stage =~ ^(mail|rcpt)$ && $got_reply == 5* && $got_reply != *5.7.1* ]]; then
			say "envelope $name: Postfix itself refused it at $got_stage ($got_reply)"
			continue
		fi
		errors+=("$name: MAIL FROM:$mail RCPT TO:$rcpt: expected '$want' at $stage, got '$got_reply' at $got_stage")
	done <<<"$ENV_CASES"
	say "envelope readings: $n cases"
	report envelope-readings "$start" "${errors[@]}"
}

# Security item 9: thousands of copies of a forged X-Listwarden-* header
# used to become thousands of delete actions, and Postfix's cleanup slows
# down faster than quadratically with them (4,000 copies: 2.2 s). Past 16
# copies the message is refused at end of DATA instead, quickly.
check_forged_tag_flood() {
	local start errors=() msg=$LW_IT_DIR/tag-flood.eml out took
	start=$(now_ms)
	{
		printf 'From: someone@example.net\r\nTo: bob@example.com\r\nSubject: tag flood\r\n'
		for ((i = 0; i < 4000; i++)); do printf 'X-Listwarden-Bounce: forged %d\r\n' "$i"; done
		printf '\r\nbody\r\n'
	} >"$msg"
	out=$("$LW_IT_PYTHON" "$LW_IT_HOME/lib/rawsmtp.py" "$SMTPD_PORT" 198.19.200.7 \
		'<someone@example.net>' '<bob@example.com>' "$msg" 2>&1) || out="error	$out"
	took=$(($(now_ms) - start))
	[[ $out == "data	550 5.7.1"* ]] || errors+=("4,000 forged tags: expected 550 5.7.1 after DATA, got: $out")
	((took < 2000)) || errors+=("4,000 forged tags took ${took} ms to refuse (expected well under 2 s)")
	say "forged tag flood: 4,000 X-Listwarden-Bounce headers refused in ${took} ms"
	report forged-tag-flood "$start" "${errors[@]}"
}

# A valid signed recipient written in another case (and with a comment):
# Postfix's {rcpt_addr} differs from the text the client sent, so the
# tagged recipient must be replaced in the form Postfix holds it. Delivered
# once, to the plain address only.
check_signed_recipient_forms() {
	local start errors=() signed token msg out files envelope i form
	start=$(now_ms)
	signed=$("$LW_BIN" sign -c "$LW_CONFIG" members-bounces@lists.example.org 2>/dev/null)
	i=0
	for form in "<${signed^^}>" "<${signed%@*}(c)@lists.example.org>"; do
		i=$((i + 1))
		token="lwit-$LW_IT_RUN_ID-signed-form-$i"
		msg=$LW_IT_DIR/signed-form-$i.eml
		printf 'From: MAILER-DAEMON@mx.example.com\r\nSubject: Undelivered %s\r\n\r\n<gone@example.com>: 550 5.1.1 User unknown\r\n' "$token" >"$msg"
		out=$("$LW_IT_PYTHON" "$LW_IT_HOME/lib/rawsmtp.py" "$SMTPD_PORT" "198.19.210.$i" '<>' "$form" "$msg" 2>&1) ||
			out="error	$out"
		if [[ $out != "data	250"* ]]; then
			errors+=("RCPT TO:$form: expected 250 after DATA, got: $out")
			continue
		fi
		files=""
		for ((j = 0; j < 50 && ${#files} == 0; j++)); do
			files=$(scn_sink_files "$token")
			[[ -n $files ]] || sleep 0.1
		done
		[[ -n $files ]] || {
			errors+=("RCPT TO:$form: nothing reached the sink")
			continue
		}
		sleep 0.3
		files=$(scn_sink_files "$token")
		# shellcheck disable=SC2086 # one file name per word
		envelope=$(scn_sink_envelope $files | awk '$1 == "rcpt" { print tolower($2) }' | sort | tr '\n' ' ')
		[[ $envelope == "members-bounces@lists.example.org " ]] ||
			errors+=("RCPT TO:$form: the sink got recipients '$envelope', expected only members-bounces@lists.example.org")
	done
	report signed-recipient-forms "$start" "${errors[@]}"
}
