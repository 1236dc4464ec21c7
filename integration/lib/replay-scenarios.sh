# shellcheck shell=bash
# shellcheck disable=SC2153,SC2034 # globals shared with integration/replay
# Incident replay scenarios (integration/replay): plans, playing them
# through Postfix with lib/replay-smtp.py, and accounting for every message
# (sent = accepted + refused + tempfailed + errors; accepted = delivered +
# still queued; lost and duplicated must be 0).
# Uses LW_IT_DIR, SINK_DIR, PF_LOG, LW_BIN, LW_CONFIG, RP_* from integration/replay.

RP_FAILURES=0  # scenarios that lost or duplicated mail
RP_ROWS=()     # result table rows
RP_KEY_NOTES=() # extra lines printed under the table
RP_PEAK_PID=""

FX=$LW_IT_REPO/tests/fixtures/dsn

# The run's signed bounce address for members@ (the shipped example key).
rp_signed_rcpt() {
	"$LW_BIN" sign -c "$LW_CONFIG" members-bounces@lists.example.org
}

# Samples the queue size (postqueue -p) every half second into $1 until stopped.
rp_peak_start() {
	local file=$1
	: >"$file"
	(
		while :; do
			rp_postqueue_count >>"$file"
			sleep 0.5
		done
	) &
	RP_PEAK_PID=$!
}

# Stops the sampler; prints the largest sample of $1.
rp_peak_stop() {
	stop_pid "$RP_PEAK_PID" "queue sampler"
	RP_PEAK_PID=""
	sort -n "$1" | tail -n 1 | awk '{ print $1 + 0 }'
}

# Plays plan $2 on smtpd port $1, results into $3. Prints the wall time (s).
rp_play() {
	local port=$1 plan=$2 results=$3 t0 t1
	t0=$(now_ms)
	"$LW_IT_PYTHON" "$LW_IT_HOME/lib/replay-smtp.py" 127.0.0.1 "$port" "$plan" "$results" \
		--threads "$RP_THREADS" --per-session "$RP_PER_SESSION" ||
		die "replay-smtp.py failed on $plan"
	t1=$(now_ms)
	awk -v ms="$((t1 - t0))" 'BEGIN { printf "%.1f\n", ms / 1000 }'
}

# The Message-ID (without <>) of every message smtp-sink received, one a
# line; then removes the dump files so the next run starts empty.
rp_sink_collect() {
	local out=$1
	# shellcheck disable=SC2016 # an awk program
	find "$SINK_DIR" -type f -print0 |
		xargs -0 -r awk 'FNR == 1 { found = 0 }
			!found && tolower($0) ~ /^message-id:/ { v = $2; gsub(/[<>]/, "", v); sub(/@replay\.test$/, "", v); print v; found = 1 }' >"$out"
	find "$SINK_DIR" -type f -delete
}

# Waits for the queue to empty after a run (at most RP_DRAIN seconds).
rp_drain() {
	rp_wait_queue_empty "$RP_DRAIN" || say "the queue still holds $(rp_queue_count) messages after ${RP_DRAIN}s"
	sleep 0.3 # smtp-sink closes its dump files
}

# Accounting of one run. $1 run dir (plan.tsv, results.tsv, sink-ids.txt),
# $2 ID prefix to count ("" = all), $3 queued count. Prints
# "sent accepted rejected tempfailed errors unknown delivered lost dup leaked",
# where leaked = delivered though the client was told it was not accepted.
rp_account() {
	local dir=$1 prefix=$2 queued=$3
	awk -F'\t' -v p="$prefix" -v queued="$queued" '
		FILENAME ~ /plan.tsv$/ { if (index($1, p) == 1) { plan[$1] = 1; sent++ }; next }
		FILENAME ~ /results.tsv$/ {
			if (!($1 in plan)) next
			out[$1] = $2
			if ($2 == "accepted") acc++
			else if ($2 ~ /reject$/) rej++
			else if ($2 ~ /tempfail$/) tf++
			else if ($2 == "error") err++
			else if ($2 == "unknown") unk++
			next
		}
		{ if ($1 in plan) { seen[$1]++ } }
		END {
			for (id in seen) { del++; if (seen[id] > 1) dup += seen[id] - 1; if (out[id] != "accepted" && out[id] != "unknown") leak++ }
			for (id in out) if (out[id] == "accepted" && !(id in seen)) missing++
			lost = missing - queued; if (lost < 0) lost = 0
			printf "%d %d %d %d %d %d %d %d %d %d\n", sent, acc, rej, tf, err, unk, del, lost, dup, leak
		}' "$dir/plan.tsv" "$dir/results.tsv" "$dir/sink-ids.txt"
}

# Outcome counts of results $1 for IDs with prefix $2, "outcome=count ...".
rp_outcomes() {
	awk -F'\t' -v p="$2" 'index($1, p) == 1 { n[$2]++ } END { for (o in n) printf "%s=%d ", o, n[o] }' "$1" | xargs -n1 | sort | xargs
}

# Adds a table row and counts a failure when mail was lost or duplicated.
# $1 scenario, $2 mode, $3 "sent accepted rejected tempfailed errors unknown
# delivered lost dup leaked", $4 queue peak, $5 seconds, $6 notes.
rp_row() {
	local scenario=$1 mode=$2 acct=$3 peak=$4 secs=$5 notes=$6
	local sent acc rej tf err unk del lost dup leak
	read -r sent acc rej tf err unk del lost dup leak <<<"$acct"
	RP_ROWS+=("| $scenario | $mode | $sent | $acc | $rej | $tf | $((err + unk)) | $del | $lost | $dup | $peak | $secs | $notes |")
	if ((lost > 0 || dup > 0 || leak > 0)); then
		RP_FAILURES=$((RP_FAILURES + 1))
		say "FAIL $scenario ($mode): lost $lost, duplicated $dup, delivered though refused $leak"
	fi
}

# Genuine mail's time in Postfix (delay= of its status=sent lines, joined to
# its Message-IDs through cleanup's lines): "median/max s". $1 results, $2 prefix.
rp_genuine_delay() {
	local results=$1 prefix=$2
	awk -v p="$prefix" '
		FILENAME == ARGV[1] { split($0, f, "\t"); if (index(f[1], p) == 1) want[f[1]] = 1; next }
		/ message-id=</ {
			m = $0; sub(/.*message-id=</, "", m); sub(/>.*/, "", m); sub(/@replay\.test$/, "", m)
			if (m in want) { q = $0; sub(/: message-id=.*/, "", q); sub(/.* /, "", q); qid[q] = 1 }
			next
		}
		/status=sent/ {
			q = $0; sub(/: to=<.*/, "", q); sub(/.* /, "", q)
			if (q in qid) { d = $0; sub(/.* delay=/, "", d); sub(/,.*/, "", d); print d + 0 }
		}' "$results" "$PF_LOG" | sort -g | awk '{ v[NR] = $1 } END { if (NR) printf "%.2f/%.2f s", v[int((NR + 1) / 2)], v[NR]; else print "-" }'
}

# --- plans (awk: 100,000 lines in well under a second) ---

# Backscatter storm: $2 forged bounces to the plain members-bounces@ from
# $3 networks (10.x.y.0/24), with $4 genuine signed bounces from 20 other
# networks (172.16.n.0/24) spread through it, in groups of RP_PER_SESSION
# per client. Plan into $1.
rp_plan_storm() {
	local out=$1 forged=$2 nets=$3 genuine=$4 signed=$5 tag=$6
	awk -v F="$forged" -v N="$nets" -v G="$genuine" -v S="$signed" -v k="$RP_PER_SESSION" -v tag="$tag" 'BEGIN {
		every = G > 0 ? int(F / G) : F + 1; if (every < 1) every = 1; g = 0
		for (i = 0; i < F; i++) {
			blk = int(i / k); n = blk % N
			printf "f%d-%s\t10.%d.%d.%d\t\tmembers-bounces@lists.example.org\tplain\n", i, tag, int(n / 256), n % 256, 1 + int(blk / N) % 250
			if (g < G && i % every == 0) { printf "g%d-%s\t172.16.%d.%d\t\t%s\tplain\n", g, tag, g % 20, 1 + int(g / 20) % 250, S; g++ }
		}
		for (; g < G; g++) printf "g%d-%s\t172.16.%d.%d\t\t%s\tplain\n", g, tag, g % 20, 1 + int(g / 20) % 250, S
	}' >"$out"
}

# Provider flood: $2 signed DSNs from one /24 (203.0.113.0/24), with $3
# from other networks spread through it. Plan into $1.
rp_plan_flood() {
	local out=$1 flood=$2 others=$3 signed=$4 tag=$5
	awk -v F="$flood" -v O="$others" -v S="$signed" -v fx="$FX/postfix_dsn.eml" -v tag="$tag" -v k="$RP_PER_SESSION" 'BEGIN {
		every = O > 0 ? int(F / O) : F + 1; if (every < 1) every = 1; o = 0
		for (i = 0; i < F; i++) {
			printf "p%d-%s\t203.0.113.%d\t\t%s\tfile:%s\n", i, tag, 1 + int(i / k) % 254, S, fx
			if (o < O && i % every == 0) { printf "o%d-%s\t172.20.%d.1\t\t%s\tfile:%s\n", o, tag, o % 250, S, fx; o++ }
		}
		for (; o < O; o++) printf "o%d-%s\t172.20.%d.1\t\t%s\tfile:%s\n", o, tag, o % 250, S, fx
	}' >"$out"
}

# Complaint deferrals: $2 each of Yahoo TS01 and TSS04 deferral DSNs and
# ARF abuse reports, signed, from 30 networks. Plan into $1.
rp_plan_complaints() {
	local out=$1 each=$2 signed=$3 tag=$4
	awk -v E="$each" -v S="$signed" -v fx="$FX" -v tag="$tag" 'BEGIN {
		split("yahoo_ts01_delay yahoo_tss04_delay arf_abuse", kinds, " ")
		for (i = 0; i < E; i++) for (k = 1; k <= 3; k++) {
			n = (i * 3 + k) % 30
			printf "c%d%s-%s\t172.24.%d.%d\t\t%s\tfile:%s/%s.eml\n", k, i, tag, n, 1 + i % 250, S, fx, kinds[k]
		}
	}' >"$out"
}

# Mixed load for the fault scenarios: 40% ordinary mail (o), 15% genuine
# signed bounces (g), 45% forged bounces (f), $2 in all. Plan into $1.
# (Genuine bounces stay under the shipped per-address budget, 600 an hour
# for one signed address, or they would be tempfailed for that reason.)
rp_plan_mixed() {
	local out=$1 total=$2 signed=$3 tag=$4
	awk -v T="$total" -v S="$signed" -v tag="$tag" -v k="$RP_PER_SESSION" 'BEGIN {
		for (i = 0; i < T; i++) {
			n = int(i / k) % 200
			c = int(i / k) % 20
			if (c < 8) printf "o%d-%s\t198.18.%d.%d\talice@example.net\tbob@example.com\tplain\n", i, tag, n, 1 + i % 250
			else if (c < 11) printf "g%d-%s\t172.28.%d.%d\t\t%s\tplain\n", i, tag, n, 1 + i % 250, S
			else printf "f%d-%s\t10.200.%d.%d\t\tmembers-bounces@lists.example.org\tplain\n", i, tag, n, 1 + i % 250
		}
	}' >"$out"
}
