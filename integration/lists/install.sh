#!/bin/bash
# Installs Debian's sympa (6.2) and mailman3 (3.3) when missing, with SQLite
# behind each (dbconfig-sqlite3): no database server to start, stop or
# tune, and both programs support it (Sympa's db_type SQLite, Mailman's
# default). The packages start no service: a policy-rc.d refuses every
# start during the install; integration/lists/run starts its own instances.
set -euo pipefail

installed() { [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]; }
want=()
installed sympa || want+=(sympa)
installed mailman3 || want+=(mailman3)
((${#want[@]} == 0)) && exit 0
[[ $(id -u) == 0 ]] || {
	echo "lists/install: need root to install ${want[*]}" >&2
	exit 1
}

echo "lists/install: installing ${want[*]} (Debian packages, SQLite)" >&2
# The machine has no domain name, so Sympa's default listmaster address
# (listmaster@<hostname>) is invalid and its postinst fails: name one. On a
# machine that never had the packages, debconf knows none of these
# questions yet and refuses some (the dbconfig ones); that is fine: with
# only dbconfig-sqlite3 installed, dbconfig-common picks SQLite anyway, and
# a sympa.conf that still has a bad listmaster is mended below.
debconf-set-selections <<'SEL' 2>/dev/null || true
postfix postfix/main_mailer_type select No configuration
sympa sympa/hostname string lists.example.org
sympa sympa/listmaster string listmaster@lists.example.org
sympa sympa/use_soap boolean false
sympa sympa/dbconfig-install boolean true
sympa sympa/database-type select sqlite3
mailman3 mailman3/dbconfig-install boolean true
mailman3 mailman3/database-type select sqlite3
SEL

# Sympa's postinst refuses a sympa.conf whose listmaster has no domain:
# give it ours, then let dpkg finish the configuration.
mend_sympa_conf() {
	local conf=/etc/sympa/sympa/sympa.conf
	if [[ -f $conf ]] && ! grep -qE '^listmaster[[:space:]]+[^@]+@[^.]+\.' "$conf"; then
		sed -i -E 's/^domain[[:space:]].*/domain\tlists.example.org/; s/^listmaster[[:space:]].*/listmaster\tlistmaster@lists.example.org/' "$conf"
	fi
}

export DEBIAN_FRONTEND=noninteractive
policy=/usr/sbin/policy-rc.d
made_policy=0
if [[ ! -e $policy ]]; then
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod 0755 "$policy"
	# shellcheck disable=SC2034 # read by the EXIT trap
	made_policy=1
fi
trap '((made_policy)) && rm -f "$policy"' EXIT
log=$(mktemp "${TMPDIR:-/tmp}/lw-lists-install.XXXXXX")
mend_sympa_conf
dpkg --configure -a >>"$log" 2>&1 || true
apt-get update -qq >>"$log" 2>&1 || true
# dbconfig-sqlite3 first, so neither package pulls the PostgreSQL variant.
apt-get install -y -qq --no-install-recommends dbconfig-sqlite3 sqlite3 >>"$log" 2>&1
apt-get install -y -qq --no-install-recommends "${want[@]}" >>"$log" 2>&1 || {
	mend_sympa_conf
	dpkg --configure -a >>"$log" 2>&1 || true
}
for p in sympa mailman3; do
	installed "$p" || {
		tail -n 30 "$log" >&2
		echo "lists/install: $p did not install (log: $log)" >&2
		exit 1
	}
done
rm -f "$log"
