# shellcheck shell=bash
# The list server's socket (milter.trusted_listen) on real Postfix. An
# extra smtpd listener selects it with smtpd_milter_maps (a cidr table that
# sends every client there: the list server as it should, strangers as a
# map that routes too much would), and sendmail(1) reaches it once
# non_smtpd_milters names it. integration/scenarios-trusted/*.scn are played
# through them: the list server's post and local submission leave signed;
# a stranger's backscatter is refused with 550 at end of data; a stranger's
# clean post gets 451 and listwarden names the key to fix. Their names
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
	report trusted-socket "$start" "${errors[@]}"
}
