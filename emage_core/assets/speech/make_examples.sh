#!/usr/bin/env bash
# Rebuild the example speech (needs Debian's espeak-ng; python with soundfile + soxr).
set -euo pipefail
cd "$(dirname "$0")"
say() { espeak-ng -v "$1" -s "$2" -w "$3.raw.wav" "$4"; python -c "
import soundfile as sf, soxr, numpy as np
x, sr = sf.read('$3.raw.wav'); sf.write('$3.wav', soxr.resample(x, sr, 16000).astype(np.float32), 16000, subtype='PCM_16')"
  rm "$3.raw.wav"; }
say en-us 150 hello "Hello, and welcome to EMAGE Studio. Speak a few sentences, and watch the body answer with gestures of its own."
say en-gb 160 story "Last summer we drove all the way up the coast. On the first day it rained, on the second day the car broke down, and on the third day, finally, we saw the sea."
say en-us+f3 140 question "Do you really think so? I am not sure. Let me explain why, with three simple reasons."
