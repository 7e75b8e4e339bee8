# Debian's python3 for the echo server (its code is the recipe's `command`).
FROM debian-base
RUN apt-get update && apt-get install -y --no-install-recommends python3 && rm -rf /var/lib/apt/lists/*
