# shellcheck shell=bash
# A private opendkim (Debian's) signing the expander's copies on the private
# Postfix's reinjection listener, and an independent check of every copy
# with dkimpy (lib/dkimcheck.py):
#
#   listwarden-expand ──▶ smtpd BASE+30 ──milter (unix socket)──▶ opendkim (signs) ──▶ smtp-sink
#
# dkim_setup (from exp_setup, before Postfix starts) makes a key with
# opendkim-genkey, writes opendkim's config from the lines
# packaging/postfix/opendkim.conf ships (each substitution must take) and
# starts opendkim in the foreground on a unix socket in LW_IT_DIR, as its
# own user. No system service: nothing under /etc is read or written. exp_write_postfix puts
# the shipped master.cf override (lib/expander.sh) on the reinjection
# listener. dkim_check_copies verifies the post's copies (EXP_POST_FILES).
# The list-manager runs (lib/lists.sh) start the same opendkim after
# listwarden on their outbound milter path and verify with dkim_verify.
# Uses LW_IT_DIR, LW_IT_REPO and LW_IT_PYTHON from the harness.
# shellcheck disable=SC2153

DKIM_DOMAIN=lists.example.org
DKIM_SELECTOR=lwit
DKIM_USER=opendkim
DKIM_SOCKET="" DKIM_DIR="" DKIM_PID=""

# The active lines between "# BEGIN listwarden opendkim" and "# END
# listwarden opendkim" of the shipped opendkim.conf.
dkim_shipped_conf() {
	awk '
		/^# BEGIN listwarden opendkim$/ { inside = 1; next }
		/^# END listwarden opendkim$/ { inside = 0; next }
		inside && !/^#/ && NF' "$LW_IT_REPO/packaging/postfix/opendkim.conf"
}

# Key, tables and config under LW_IT_DIR/opendkim; starts opendkim on
# DKIM_SOCKET.
dkim_setup() {
	local conf shipped line i
	id -u "$DKIM_USER" >/dev/null 2>&1 || die "no user $DKIM_USER (the opendkim package makes it)"
	DKIM_DIR=$LW_IT_DIR/opendkim
	DKIM_SOCKET=$DKIM_DIR/run/opendkim.sock
	mkdir -p "$DKIM_DIR/keys" "$DKIM_DIR/run"
	# As the shipped notes say: set-group-ID postfix, so Postfix may connect.
	chown "$DKIM_USER:postfix" "$DKIM_DIR/run"
	chmod 2750 "$DKIM_DIR/run"
	opendkim-genkey -b 2048 -d "$DKIM_DOMAIN" -s "$DKIM_SELECTOR" -D "$DKIM_DIR/keys" ||
		die "opendkim-genkey failed"
	# The key as production keeps it: the opendkim user's alone.
	chown -R "$DKIM_USER:" "$DKIM_DIR/keys"
	chmod 0700 "$DKIM_DIR/keys"
	chmod 0600 "$DKIM_DIR/keys/$DKIM_SELECTOR.private"
	printf 'lists %s:%s:%s\n' "$DKIM_DOMAIN" "$DKIM_SELECTOR" "$DKIM_DIR/keys/$DKIM_SELECTOR.private" >"$DKIM_DIR/key.table"
	printf '*  lists\n' >"$DKIM_DIR/signing.table"
	shipped=$(dkim_shipped_conf)
	conf=$DKIM_DIR/opendkim.conf
	{
		echo "# listwarden integration/run: packaging/postfix/opendkim.conf (lib/dkim.sh)."
		sed -e "s|local:/var/spool/postfix/opendkim/opendkim\.sock$|local:$DKIM_SOCKET|" \
			-e "s|file:/etc/opendkim/key\.table$|file:$DKIM_DIR/key.table|" \
			-e "s|refile:/etc/opendkim/signing\.table$|refile:$DKIM_DIR/signing.table|" <<<"$shipped"
		# Not in the shipped lines: Debian's /etc/opendkim.conf has its own.
		echo "PidFile $DKIM_DIR/opendkim.pid"
		echo "Syslog no"
		# The key lives under the world-writable /tmp, which opendkim's
		# safe-key check refuses whatever the key's own mode (0600 here);
		# /etc/opendkim/keys passes it.
		echo "RequireSafeKeys false"
	} >"$conf"
	for line in "Socket local:$DKIM_SOCKET" "KeyTable file:$DKIM_DIR/key.table" \
		"SigningTable refile:$DKIM_DIR/signing.table" "UserID $DKIM_USER" "SignHeaders" "OversignHeaders"; do
		awk -v want="$line" '{ $1 = $1 } index($0, want) == 1 { found = 1 } END { exit !found }' "$conf" ||
			die "packaging/postfix/opendkim.conf: no '$line' after substitution"
	done
	opendkim -n -x "$conf" >"$DKIM_DIR/check.log" 2>&1 || {
		cat "$DKIM_DIR/check.log" >&2
		die "opendkim -n rejected $conf"
	}
	opendkim -f -x "$conf" >>"$DKIM_DIR/opendkim.log" 2>&1 &
	DKIM_PID=$!
	for ((i = 0; i < LW_IT_WAIT_TENTHS; i++)); do
		[[ -S $DKIM_SOCKET ]] && break
		kill -0 "$DKIM_PID" 2>/dev/null || break
		sleep 0.1
	done
	[[ -S $DKIM_SOCKET ]] || {
		cat "$DKIM_DIR/opendkim.log" >&2
		die "opendkim made no socket $DKIM_SOCKET"
	}
	say "opendkim $(opendkim -V 2>/dev/null | head -n 1 | awk '{ print $NF }') on $DKIM_SOCKET signs d=$DKIM_DOMAIN s=$DKIM_SELECTOR"
}

dkim_stop() {
	stop_pid "$DKIM_PID" opendkim
	DKIM_PID=""
}

# The master.cf lines of the shipped "listwarden expander opendkim" block,
# uncommented, with the test's opendkim socket.
dkim_master_lines() {
	awk '
		/^# BEGIN listwarden expander opendkim$/ { inside = 1; next }
		/^# END listwarden expander opendkim$/ { inside = 0; next }
		inside && /^#/ { print substr($0, 2) }' "$LW_IT_REPO/packaging/postfix/master.cf" |
		sed "s|=unix:/var/spool/postfix/opendkim/opendkim\.sock$|=unix:$DKIM_SOCKET|"
}

# lib/dkimcheck.py on sink files $@ with the key opendkim-genkey made: one
# "ok FILE present=..." or "bad FILE: what" line per file, then the
# forgery controls. Fails only when the checker itself fails.
dkim_verify() {
	"$LW_IT_PYTHON" "$LW_IT_HOME/lib/dkimcheck.py" "$DKIM_DIR/keys/$DKIM_SELECTOR.txt" \
		"$DKIM_DOMAIN" "$DKIM_SELECTOR" "$@"
}

# Every copy of the post verifies with dkimpy against the key opendkim-genkey
# made, with From, List-Id, List-Unsubscribe, List-Unsubscribe-Post and
# Feedback-ID in h= (oversigned), and two forgeries of a copy fail.
dkim_check_copies() {
	local start errors=() out ok bad n
	start=$(now_ms)
	if ((${#EXP_POST_FILES[@]} == 0)); then
		report expander-dkim "$start" "no copies of the post to check"
		return 0
	fi
	n=${#EXP_POST_FILES[@]}
	out=$(dkim_verify "${EXP_POST_FILES[@]}" 2>&1) || errors+=("dkimcheck.py failed: $(tail -n 3 <<<"$out")")
	ok=$(grep -c '^ok ' <<<"$out" || true)
	bad=$(grep '^bad ' <<<"$out" | head -n 5 || true)
	((ok == n)) || errors+=("$ok of $n copies verify with dkimpy")
	[[ -z $bad ]] || errors+=("copies that fail (first 5):" "$bad")
	(($(grep -c '^control ok' <<<"$out" || true) == 2)) ||
		errors+=("the forgery controls:" "$(grep '^control' <<<"$out" || true)")
	EXP_SUMMARY+=("dkim: $ok of $n copies signed by opendkim verify with dkimpy (h= covers List-Unsubscribe, List-Unsubscribe-Post, Feedback-ID, oversigned); $(grep -c '^control ok' <<<"$out" || true) of 2 forgeries refused; took $((($(now_ms) - start) / 1000)).$(printf '%02d' $(((($(now_ms) - start) % 1000) / 10)))s")
	report expander-dkim "$start" "${errors[@]}"
}
