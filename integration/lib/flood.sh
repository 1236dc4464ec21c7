# shellcheck shell=bash
# Flood control through real Postfix: a burst of bounces from one network
# is tempfailed (451 4.7.1 at RCPT) once its budget is spent, while a
# bounce from another network still gets in. The network budget is set in
# integration/config/listwarden.yaml.in (burst FLOOD_BURST).

FLOOD_BURST=20
FLOOD_SENT=25

# One bounce's RCPT reply code from client $1 to recipient $2.
flood_rcpt_code() {
	local client=$1 rcpt=$2 out
	out=$(swaks --server 127.0.0.1 --port "$SMTPD_PORT" --timeout 20 \
		--helo mx.flood.example --from '<>' --to "$rcpt" \
		--xclient-addr "$client" --xclient-name mx.flood.example \
		--quit-after RCPT 2>&1) || true
	awk '/^ -> RCPT TO/ { getline; sub(/^ *<[-*~]* */, ""); print substr($0, 1, 3); exit }' <<<"$out"
}

check_flood() {
	local start rcpt i code ok=0 limited=0 other errors=()
	start=$(now_ms)
	rcpt=$("$LW_BIN" sign -c "$LW_CONFIG" members-bounces@lists.example.org 2>/dev/null)
	for ((i = 1; i <= FLOOD_SENT; i++)); do
		code=$(flood_rcpt_code "198.18.0.$i" "$rcpt")
		case $code in
		250) ok=$((ok + 1)) ;;
		451) limited=$((limited + 1)) ;;
		*) errors+=("bounce $i from 198.18.0.$i got '$code' at RCPT") ;;
		esac
	done
	other=$(flood_rcpt_code 192.0.2.200 "$rcpt")
	((ok == FLOOD_BURST)) || errors+=("$ok bounces accepted from 198.18.0.0/24, expected the burst of $FLOOD_BURST")
	((limited == FLOOD_SENT - FLOOD_BURST)) || errors+=("$limited bounces tempfailed, expected $((FLOOD_SENT - FLOOD_BURST))")
	[[ $other == 250 ]] || errors+=("a bounce from another network got '$other', expected 250")
	say "flood: $FLOOD_SENT bounces from one /24: $ok accepted, $limited tempfailed (451); other network: $other"
	report flood-network-budget "$start" "${errors[@]}"
}
