#!/bin/sh
# Part of papers/tara-2021.md, "Where the time goes".
# Interleaved A/B of two builds of benches/paper.rs: ABBA order, one tara point per run.
# usage: ab.sh BEFORE AFTER PAIRS SYSTEM
A=$1; B=$2; N=$3; SYS=${4:-tara}
for i in $(seq 1 $N); do
  if [ $((i % 2)) -eq 1 ]; then order="$A $B"; else order="$B $A"; fi
  for bin in $order; do
    r=$(TARA_PAPER_PROFILE=$SYS TARA_PAPER_SECONDS=3 TARA_PAPER_ROUNDS=1 $bin 2>/dev/null | awk '/^median/ {print $5}')
    echo "$i $(basename $bin) $r"
  done
done
