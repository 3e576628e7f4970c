"""Progress reports, exports and cadre counting (docs/bao-cao.md).

Submodules: `organisations` (the tree in the records: `sync_organisations`), `queries`
(progress, weekly activity, name lists — aggregate SQL), `cadres` (the Sốp Cộp counting rules),
`exports` (XLSX, CSV, terminal tables), `citizens` (the key for citizen-ID hashes), `cli`
(`loa report`). Nothing heavy is imported here, so `loa report --help` stays fast.
"""
