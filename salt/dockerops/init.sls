# Everything dockerops manages on a minion.
include:
  - .services
  - .filelogs
  - .backups
