#!/usr/bin/env bash
# Installs the offline speech engines (and audio tools) from Debian. mbrola voices and pico live
# in Debian's contrib and non-free components, so those are enabled first.
set -euo pipefail
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

sources=/etc/apt/sources.list.d/debian.sources
if [ -f "$sources" ] && ! grep -q "non-free" "$sources"; then
  $SUDO sed -i 's/^Components: main$/Components: main contrib non-free/' "$sources"
fi
if [ -f /etc/apt/sources.list ] && grep -q "^deb .*debian.* main$" /etc/apt/sources.list; then
  $SUDO sed -i 's/^\(deb .*debian.* main\)$/\1 contrib non-free/' /etc/apt/sources.list
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq -o Dir::Etc::sourceparts=/etc/apt/sources.list.d \
  -o APT::Get::List-Cleanup=0 || $SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  espeak-ng libespeak-ng1 \
  mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1 \
  flite \
  festival festvox-kallpc16k festvox-rablpc16k festvox-kdlpc16k festvox-don festvox-us-slt-hts \
  libttspico-utils \
  libsndfile1 ffmpeg opencv-doc libgl1 libglib2.0-0 \
  ufoai-sound scorched3d-data lincity-ng-data warzone2100-music minetest-data sound-theme-freedesktop >/dev/null
echo "Debian packages installed: espeak-ng, mbrola voices, flite, festival voices, pico, ffmpeg, opencv-doc (sample photos),"
echo "  libgl1 (OpenCV in .venv-yolo), real background noise (see generators/background_noise.py)"
