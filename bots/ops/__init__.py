"""Operations: backups and restores, the retention purge, the disk guard, Prometheus metrics.

Modules: `datadir` (the data directory's lock), `manifest`, `backup`, `restore`, `purge`,
`diskguard`, `metrics`, `service` (what `loa serve` starts: `Operations`), `cli` (the
`loa backup`, `loa restore`, `loa purge` commands). docs/van-hanh.md is the operator's guide.
Submodules are imported on use: `loa backup` must not pay for aiohttp, nor the server for tar.
"""
