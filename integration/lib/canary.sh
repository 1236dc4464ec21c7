# shellcheck shell=bash
# `listwarden canary` through the private Postfix, as in production but on
# one host:
#
#   listwarden canary ──SMTP──▶ smtpd BASE+25 ──milter: 1st sighting (mx), passed on
#                                  │ transport: canary@ ──▶ smtp:[127.0.0.1]:BASE+32
#                                  ▼
#                               smtpd BASE+32 (the "list server") ──milter: 2nd sighting (list), DISCARD
#
# canary_setup (after lw_write_config, before listwarden and Postfix start)
# adds the `canary:` block to the test config and the list-server listener
# and its transport to the private instance. check_canary runs the command
# CANARY_RUNS times: each must exit 0 and print its leg times, the second
# hop must have discarded the probe (Postfix logs milter-discard) and
# nothing may reach the sink; check_canary_milter_down (after listwarden is
# stopped) must see exit 69 (the MX tempfails without its milter).
# Uses SMTPD_PORT, SINK_DIR, PF_CONF, PF_LOG, LW_BIN, LW_CONFIG, LW_LOG,
# METRICS_PORT and LW_IT_DIR from the harness.
# shellcheck disable=SC2153

CANARY_ADDRESS=canary@lists.example.org
CANARY_RUNS=${LW_IT_CANARY_RUNS:-5}
CANARY_PORT=""
CANARY_TIMES=() # the command's output lines

# $1 is the base port (the list-server listener is on +32).
canary_setup() {
	local transport
	CANARY_PORT=$(($1 + 32))
	require_free_port "$CANARY_PORT" "canary list-server smtpd"
	{
		echo "# The canary (integration/lib/canary.sh): probes go to the MX port and are"
		echo "# relayed to the list-server listener on +32, where they are discarded."
		echo "canary:"
		echo "  address: $CANARY_ADDRESS"
		echo "  sender: canary-probe@ops.example.net"
		echo "  smtp: \"127.0.0.1:$SMTPD_PORT\""
		echo "  helo: canary.ops.example.net"
		echo "  wait: 20s"
		echo "  dir: \"$LW_IT_DIR/canary\""
	} >>"$LW_CONFIG"
	"$LW_BIN" check-config "$LW_CONFIG" >"$LW_IT_DIR/check-config-canary.log" 2>&1 ||
		die "listwarden check-config rejected the config with the canary: $(head -n 3 "$LW_IT_DIR/check-config-canary.log")"
	# Another myhostname: Postfix's smtp client refuses to deliver to a
	# server that greets with its own name (mail loops back to myself).
	printf '%s\n' "127.0.0.1:$CANARY_PORT inet n - n - - smtpd -o myhostname=list-server.localdomain" \
		>>"$PF_CONF/master.cf"
	transport=$(postconf -c "$PF_CONF" -h transport_maps)
	postconf -c "$PF_CONF" -e "transport_maps = inline:{$CANARY_ADDRESS=smtp:[127.0.0.1]:$CANARY_PORT}, $transport" ||
		die "postconf -e on the private main.cf failed"
}

check_canary() {
	local start errors=() i rc out id sink_before sink_after metrics list_seen discards
	start=$(now_ms)
	sink_before=$(find "$SINK_DIR" -type f | wc -l)
	for ((i = 1; i <= CANARY_RUNS; i++)); do
		rc=0
		out=$("$LW_BIN" canary -c "$LW_CONFIG" 2>&1) || rc=$?
		CANARY_TIMES+=("$out")
		if ((rc != 0)) || [[ $out != *": ok: smtp "* ]]; then
			errors+=("run $i: exit $rc: $out")
			continue
		fi
		id=$(sed -nE 's/^canary ([0-9a-f]{16}): ok:.*/\1/p' <<<"$out")
		grep -qE "leg=\"?mx\"? probe=$id" "$LW_LOG" || errors+=("run $i: no mx-leg log line for probe $id")
		grep -qE "leg=\"?list\"? probe=$id" "$LW_LOG" || errors+=("run $i: no list-leg log line for probe $id")
		[[ ! -e $LW_IT_DIR/canary/$id.mx && ! -e $LW_IT_DIR/canary/$id.list ]] ||
			errors+=("run $i: the command left its sighting files behind")
	done
	discards=$(grep -c 'milter-discard' "$PF_LOG" || true)
	((discards >= CANARY_RUNS)) || errors+=("Postfix logged $discards milter-discard lines, expected at least $CANARY_RUNS")
	# Discarded at the list server: nothing reaches the sink.
	sleep 1
	sink_after=$(find "$SINK_DIR" -type f | wc -l)
	((sink_after == sink_before)) || errors+=("$((sink_after - sink_before)) message(s) reached the sink during the canary runs")
	metrics=$LW_IT_DIR/metrics-canary.txt
	if lw_fetch_metrics "$METRICS_PORT" "$metrics"; then
		# The raw sample: lw_metric_sum's %g would round a Unix time.
		list_seen=$(awk '/^listwarden_canary_last_seen_timestamp_seconds\{.*leg="list"/ { print $NF }' "$metrics")
		awk -v v="${list_seen:-0}" -v t="$(date +%s)" 'BEGIN { exit !(v > t - 120 && v <= t + 1) }' ||
			errors+=("listwarden_canary_last_seen_timestamp_seconds{leg=list} is $list_seen")
	else
		errors+=("GET /metrics failed")
	fi
	for out in "${CANARY_TIMES[@]}"; do say "canary: $out"; done
	report canary "$start" "${errors[@]}"
}

# Runs once listwarden is stopped: the MX tempfails (milter_default_action
# = tempfail), so the probe cannot be sent.
check_canary_milter_down() {
	local start rc=0 out
	start=$(now_ms)
	out=$("$LW_BIN" canary -c "$LW_CONFIG" 2>&1) || rc=$?
	say "canary with the milter stopped: exit $rc: $out"
	if ((rc == 69)); then
		report canary-milter-down "$start"
	else
		report canary-milter-down "$start" "exit $rc (expected 69): $out"
	fi
}
