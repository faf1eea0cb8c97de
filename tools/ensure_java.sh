#!/usr/bin/env bash
# pycocoevalcap's PTB tokenizer and METEOR run on Java. Install a headless JRE when none is found.
set -u
if command -v java >/dev/null 2>&1; then
  exit 0
fi
echo "pgbench: no Java runtime found; installing default-jre-headless (needed by pycocoevalcap)..."
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless >/dev/null && exit 0
elif command -v sudo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless >/dev/null && exit 0
fi
echo "pgbench: ERROR: could not install a Java runtime. Caption metrics (CIDEr, BLEU, METEOR, ROUGE-L via pycocoevalcap) need 'java' on PATH; install a JRE (e.g. 'apt-get install default-jre-headless') and re-run 'make install'." >&2
exit 1
