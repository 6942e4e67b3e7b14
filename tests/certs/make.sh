#!/bin/sh
# Test-only TLS material for tests/fakehub.py's HTTPS mode: a CA, and a certificate it signs for
# the fake Hub (127.0.0.1) and its CDN (127.0.0.2). Valid for 100 years; the keys protect nothing.
# Regenerate with: sh tests/certs/make.sh (from anywhere; needs the openssl command).
set -e
cd "$(dirname "$0")"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 36500 \
  -subj "/CN=hfmem test CA" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" -keyout ca-key.pem -out ca.pem
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=hfmem fake hub" \
  -keyout fakehub-key.pem -out fakehub.csr
printf 'subjectAltName=IP:127.0.0.1,IP:127.0.0.2\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n' > ext.cnf
openssl x509 -req -in fakehub.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 36500 \
  -extfile ext.cnf -out fakehub.pem
rm -f fakehub.csr ext.cnf ca.srl ca-key.pem
