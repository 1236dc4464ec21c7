# shellcheck shell=bash
# The list server's socket (milter.trusted_listen) on real Postfix. An
# extra smtpd listener selects it with smtpd_milter_maps (a cidr table that
# sends every client there: the list server as it should, strangers as a
# map that routes too much would), and sendmail(1) reaches it once
# non_smtpd_milters names it. integration/scenarios-trusted/*.scn are played
# through them: the list server's post and local submission leave signed;
# a stranger's backscatter is refused with 550 at end of data; a stranger's
# clean post gets 451 and listwarden names the key to fix. Then, with
# 127.0.0.1 taken out of trusted_networks, a sendmail(1) submission is
# misrouted, the warning shows the client Postfix reports for
# non_smtpd_milters (127.0.0.1), and it leaves once fixed. Their names
# start with ts- (the sink finds a message by a token made of the name).
#
# Uses BASE_PORT, MILTER_PORT, SMTPD_PORT, PF_CONF, LW_CONFIG, LW_BIN,
# LW_IT_DIR, LW_IT_HOME, and report/scn_run from integration/run.

# Adds trusted_listen to the test config and the listener to master.cf;
# call after lw_write_config and before lw_start and pf_start.
trusted_setup() {
	TRUSTED_MILTER_PORT=$(($1 + 93))
	TRUSTED_SMTPD_PORT=$(($1 + 94))
	require_free_port "$TRUSTED_MILTER_PORT" "listwarden trusted_listen"
	require_free_port "$TRUSTED_SMTPD_PORT" "postfix smtpd (smtpd_milter_maps)"
	sed -i "s|^  listen: \"inet:127\\.0\\.0\\.1:$MILTER_PORT\"|&\\n  trusted_listen: \"inet:127.0.0.1:$TRUSTED_MILTER_PORT\"|" "$LW_CONFIG"
	grep -qF "trusted_listen: \"inet:127.0.0.1:$TRUSTED_MILTER_PORT\"" "$LW_CONFIG" ||
		die "could not add milter.trusted_listen to $LW_CONFIG"
	"$LW_BIN" check-config "$LW_CONFIG" >"$LW_IT_DIR/check-config-trusted.log" 2>&1 || {
		cat "$LW_IT_DIR/check-config-trusted.log" >&2
		die "listwarden check-config rejected the config with trusted_listen"
	}
	# A cidr table needs no postmap.
	printf '0.0.0.0/0 inet:127.0.0.1:%s\n' "$TRUSTED_MILTER_PORT" >"$LW_IT_DIR/milter-map.cidr"
	echo "127.0.0.1:$TRUSTED_SMTPD_PORT inet n - n - - smtpd -o smtpd_milter_maps=cidr:$LW_IT_DIR/milter-map.cidr" >>"$PF_CONF/master.cf"
}

check_trusted_socket() {
	local start errors=() file name smtpd=$SMTPD_PORT e
	start=$(now_ms)
	wait_for_port "$TRUSTED_MILTER_PORT" "listwarden trusted_listen" "$LW_PID" ||
		errors+=("listwarden does not listen on trusted_listen")
	for file in "$LW_IT_HOME"/scenarios-trusted/*.scn; do
		name=$(basename "$file" .scn)
		if [[ $name == *sendmail* ]]; then
			pf_reload "non_smtpd_milters=inet:127.0.0.1:$TRUSTED_MILTER_PORT"
		fi
		SMTPD_PORT=$TRUSTED_SMTPD_PORT
		scn_run "$file"
		SMTPD_PORT=$smtpd
		if [[ $name == *sendmail* ]]; then
			pf_reload "non_smtpd_milters=inet:127.0.0.1:$MILTER_PORT"
		fi
		for e in "${SCN_ERRORS[@]}"; do errors+=("$name: $e"); done
	done
	e=$(trusted_sendmail_client) || errors+=("sendmail client: $e")
	report trusted-socket "$start" "${errors[@]}"
}

# Which client Postfix shows non_smtpd_milters (review2 M4): with 127.0.0.1
# left out of trusted_networks (reloaded with SIGHUP), a sendmail(1) submission on the trusted socket is misrouted, and
# listwarden's warning names the client Postfix reported. Restores both.
trusted_sendmail_client() {
	local saved=$LW_IT_DIR/listwarden.yaml.m4 offset line rc=0 i
	cp "$LW_CONFIG" "$saved"
	offset=$(stat -c %s "$LW_LOG")
	sed -i 's|^trusted_networks:.*|trusted_networks: ["::1/128"]|' "$LW_CONFIG"
	kill -HUP "$LW_PID"
	if ! trusted_reloaded "$offset"; then
		cp "$saved" "$LW_CONFIG"
		echo "listwarden did not reload trusted_networks"
		return 1
	fi
	pf_reload "non_smtpd_milters=inet:127.0.0.1:$TRUSTED_MILTER_PORT"
	offset=$(stat -c %s "$LW_LOG")
	printf 'From: alice@example.net\nSubject: which client\n\nprobe\n' |
		timeout 30 sendmail -C "$PF_CONF" -i -f alice@example.net -- m4-probe@example.com
	if scn_log_has "$LW_LOG" "$offset" "fix Postfix's smtpd_milter_maps"; then
		line=$(tail -c +"$((offset + 1))" "$LW_LOG" | grep -F "fix Postfix's smtpd_milter_maps" | head -n 1)
		echo "integration: trusted-socket: sendmail(1) with 127.0.0.1 not trusted: $line" >&2
		[[ $line == *client*127.0.0.1* ]] || {
			echo "the warning does not name client 127.0.0.1: $line"
			rc=1
		}
	else
		echo "no misrouted warning for a sendmail(1) submission without 127.0.0.1 trusted"
		rc=1
	fi
	offset=$(stat -c %s "$LW_LOG")
	cp "$saved" "$LW_CONFIG"
	kill -HUP "$LW_PID"
	trusted_reloaded "$offset" || {
		echo "listwarden did not reload the restored config"
		rc=1
	}
	# Restarts pickup, which takes the held submission again (now signed
	# through the ordinary socket) or Postfix has bounced it already.
	pf_reload "non_smtpd_milters=inet:127.0.0.1:$MILTER_PORT"
	# The 451 lost nothing: the submission leaves once the config is fixed.
	for ((i = 0; i < 150; i++)); do
		grep -q 'to=<m4-probe@example.com>.*status=sent' "$PF_LOG" && break
		sleep 0.1
	done
	line=$(grep -F 'to=<m4-probe@example.com>' "$PF_LOG" | tail -n 1)
	echo "integration: trusted-socket: the held submission afterwards: ${line:-nothing logged}" >&2
	[[ $line == *status=sent* ]] || {
		echo "the submission held by the 451 was not delivered after the fix: ${line:-nothing logged}"
		rc=1
	}
	return $rc
}

# Waits up to 10 s for listwarden's "config reloaded" after log offset $1.
trusted_reloaded() {
	local i
	for ((i = 0; i < 100; i++)); do
		tail -c +"$(($1 + 1))" -- "$LW_LOG" | grep -qF "config reloaded" && return 0
		sleep 0.1
	done
	return 1
}
