"""How a clinic becomes a `.sql.gz`, and how that file becomes a schema again.

Modules, in the order a backup's SQL flows through them:
- pg_tools.py: pg_dump and psql as subprocesses of the server's major version (an
  adapter: argv, the password in the environment, stderr to a file, gzip on the way,
  on several threads into one gzip member: core.parallel_gzip).
- reference.py: the structure every clinic at the code's migrations shares, built once
  in a schema of its own, checked against pg_dump, cached (steps 1 to 4 of cached.py's map).
- catalog.py: a schema's structure as sorted text lines, read by its namespace, so that
  a clinic can be compared with the reference at the clinic's cost, not the database's.
- cached.py: a clinic's dump from the cached structure plus its own rows by COPY, with
  pg_dump as the reference and the fallback on any doubt (its docstring is the map).
- tables.py: each table's rows counted and hashed as either path writes them, and read
  back the same way from a schema: what a restore drill compares (backups.drills).
- replay.py: a dump replayed by psql into a staging schema, in one transaction that
  leaves the live schema as it was (step 2 of backups.restore's map).
- swap.py: the staging schema put in the live one's place, in one short transaction
  (step 5 of backups.restore's map).
"""
