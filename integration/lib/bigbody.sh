# shellcheck shell=bash
# Fault D6 (TESTING.md, Faults) end to end: a 100 MB bounce from another MTA goes through
# Postfix to a trace-mode list, so listwarden reads the body for its trace
# check. It must decide (trace_ok, delivered whole to the sink) while its
# memory stays bounded: it keeps at most limits.max_body_bytes and then
# tells Postfix to skip the rest of the body.

BIG_BODY_MB=${LW_IT_BIG_BODY_MB:-100}
# Most the milter's peak RSS may grow while handling the message.
BIG_BODY_MAX_GROWTH_KB=$((32 * 1024))

# Peak resident set (VmHWM) of process $1 in kB.
peak_rss_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }

check_big_body() {
	local start token reply before after files size qid errors=() metrics
	start=$(now_ms)
	token="lwit-$LW_IT_RUN_ID-big-body"
	metrics=$LW_IT_DIR/metrics-big-body.txt
	lw_fetch_metrics "$METRICS_PORT" "$metrics.before" || errors+=("GET /metrics failed")
	before=$(peak_rss_kb "$LW_PID")
	reply=$("$LW_IT_PYTHON" "$LW_IT_HOME/lib/bigbody.py" "$SMTPD_PORT" 192.0.2.91 \
		legacy-owner@lists.example.org "$token" "$LW_IT_HOME/scenarios/data/dsn-ours.txt" \
		"$BIG_BODY_MB" 2>&1) || errors+=("bigbody.py failed: $reply")
	after=$(peak_rss_kb "$LW_PID")
	[[ $reply == 250* ]] || errors+=("the ${BIG_BODY_MB} MB bounce got '$reply', expected 250")
	if ((after - before > BIG_BODY_MAX_GROWTH_KB)); then
		errors+=("listwarden's peak RSS grew by $(((after - before) / 1024)) MB (from $((before / 1024)) MB) for one ${BIG_BODY_MB} MB message")
	fi
	qid=${reply##* queued as }
	if [[ $reply == 250* ]] && [[ $(pf_wait_delivery "$qid") == sent ]]; then
		files=$(grep -l -F -- "$token" "$SINK_DIR"/* 2>/dev/null | head -n 1) || true
		size=$(stat -c %s "$files" 2>/dev/null || echo 0)
		((size > BIG_BODY_MB * 1000 * 1000)) || errors+=("the sink got $size bytes, less than ${BIG_BODY_MB} MB")
		[[ -z $files ]] || rm -f "$files"
	else
		errors+=("the ${BIG_BODY_MB} MB bounce was not delivered to the sink")
	fi
	lw_fetch_metrics "$METRICS_PORT" "$metrics" || errors+=("GET /metrics failed")
	if (($(lw_metric_sum "$metrics" listwarden_bounces_total 'list="legacy"' 'verdict="trace_ok"') <= $(lw_metric_sum "$metrics.before" listwarden_bounces_total 'list="legacy"' 'verdict="trace_ok"'))); then
		errors+=("listwarden_bounces_total{list=\"legacy\",verdict=\"trace_ok\"} did not grow")
	fi
	say "big-body: ${BIG_BODY_MB} MB bounce: reply '${reply:0:40}', peak RSS $((before / 1024)) -> $((after / 1024)) MB"
	report big-body "$start" "${errors[@]}"
}
