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
# (listmaster@<hostname>) is invalid and its postinst fails: name one.
debconf-set-selections <<'SEL'
postfix postfix/main_mailer_type select No configuration
sympa sympa/hostname string lists.example.org
sympa sympa/listmaster string listmaster@lists.example.org
sympa sympa/use_soap boolean false
sympa sympa/dbconfig-install boolean true
sympa sympa/database-type select sqlite3
mailman3 mailman3/dbconfig-install boolean true
mailman3 mailman3/database-type select sqlite3
SEL
# A sympa.conf left by an earlier failed try wins over the preseed: mend it.
conf=/etc/sympa/sympa/sympa.conf
if [[ -f $conf ]] && ! grep -qE '^listmaster[[:space:]]+[^@]+@[^.]+\.' "$conf"; then
	sed -i -E 's/^domain[[:space:]].*/domain\tlists.example.org/; s/^listmaster[[:space:]].*/listmaster\tlistmaster@lists.example.org/' "$conf"
fi

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
dpkg --configure -a >/dev/null
apt-get update -qq >/dev/null || true
# dbconfig-sqlite3 first, so neither package pulls the PostgreSQL variant.
apt-get install -y -qq --no-install-recommends dbconfig-sqlite3 sqlite3 >/dev/null
apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
