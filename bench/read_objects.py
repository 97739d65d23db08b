"""The bare tools bench_media measures backups against: read every object of a private Supabase
Storage bucket once, with N threads, through the protocol alone (no Django).

    python bench/read_objects.py <url> <key> <bucket> <threads> <file of names, one a line> [<folder>]

Each object as any client of a private bucket streams it: a signed URL (POST
/object/sign/…), then a GET of it read in 64 KiB pieces; one keep-alive connection per
thread, as the service's httpx client keeps them. Without a folder the bytes are dropped;
with one, each object is also hashed (sha256) and written there: the least a backup does.
"""
from __future__ import annotations

import hashlib
import os
import sys
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

import httpx

CHUNK_SIZE = 64 * 1024


def read_one(client: httpx.Client, base: str, bucket: str, folder: str, name: str) -> int:
    signed = client.post(f"{base}/object/sign/{bucket}/{urllib.parse.quote(name)}", json={"expiresIn": 60})
    signed.raise_for_status()
    size, digest = 0, hashlib.sha256()
    with client.stream("GET", f"{base}{signed.json()['signedURL']}") as response, \
            (open(os.path.join(folder, name.replace("/", "_")), "wb") if folder else nullcontext()) as out:
        response.raise_for_status()
        for chunk in response.iter_bytes(CHUNK_SIZE):
            size += len(chunk)
            if out is not None:
                digest.update(chunk)
                out.write(chunk)
    return size


def main() -> None:
    url, key, bucket, threads, names_file = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
    folder = sys.argv[6] if len(sys.argv) > 6 else ""
    with open(names_file, encoding="utf-8") as listed:
        names = [line.strip() for line in listed if line.strip()]
    base = f"{url.rstrip('/')}/storage/v1"
    headers = {"apikey": key, "Authorization": f"Bearer {key}"}
    local = threading.local()
    clients: list[httpx.Client] = []

    def read(name: str) -> int:
        if not hasattr(local, "client"):  # one client, so one kept-alive connection, per thread
            local.client = httpx.Client(headers=headers, timeout=60)
            clients.append(local.client)
        return read_one(local.client, base, bucket, folder, name)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        total = sum(pool.map(read, names))
    for client in clients:
        client.close()
    print(f"{len(names)} objects, {total} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
