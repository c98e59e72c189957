#!/usr/bin/env bash
# Make the TLS certificates and SuperNode keys of a test federation, as Flower's docs do:
#   scripts/make_certs.sh DIR N [HOST ...]
# DIR/ca.crt, ca.key            a private certificate authority (keep ca.key on one machine)
# DIR/server.crt, server.key    the SuperLink's certificate, signed by the CA, valid for
#                               localhost, 127.0.0.1, ::1 and every HOST given (names or IPs
#                               the SuperNodes and `flwr` use to reach the SuperLink)
# DIR/supernode-K, -K.pub       SuperNode K's key pair (ECDSA P-384, OpenSSH format) for
#                               `--auth-supernode-private-key` and `flwr supernode register`
# For a test federation only: a real one gets its certificates from your organisation's CA.
set -euo pipefail

if [ $# -lt 2 ] || ! [[ "$2" =~ ^[0-9]+$ ]]; then
  echo "usage: $0 DIR N [HOST ...]  (N = number of SuperNode key pairs)" >&2
  exit 2
fi
dir=$1
n=$2
shift 2

for tool in openssl ssh-keygen; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "make_certs: '$tool' not found; install it (Debian: apt-get install openssl" \
         "openssh-client), or run scripts/setup.sh, which installs them with apt when it can" >&2
    exit 1
  fi
done

mkdir -p "$dir"
cd "$dir"

san="DNS:localhost,IP:127.0.0.1,IP:::1"
for host in "$@"; do
  if [[ "$host" =~ ^[0-9.]+$ || "$host" == *:* ]]; then
    san="$san,IP:$host"
  else
    san="$san,DNS:$host"
  fi
done

openssl req -x509 -newkey rsa:2048 -sha256 -days 365 -nodes -subj "/CN=fedrlprune test CA" \
  -keyout ca.key -out ca.crt 2>/dev/null
openssl req -newkey rsa:2048 -sha256 -nodes -subj "/CN=${1:-localhost}" \
  -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' "$san" \
  >server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 -sha256 \
  -extfile server.ext -out server.crt 2>/dev/null
rm -f server.csr server.ext ca.srl
chmod 600 ca.key server.key

for ((k = 0; k < n; k++)); do
  rm -f "supernode-$k" "supernode-$k.pub"
  ssh-keygen -q -t ecdsa -b 384 -N "" -C "supernode-$k" -f "supernode-$k"
done
echo "make_certs: CA, SuperLink certificate ($san) and $n SuperNode key pair(s) in $(pwd)"
