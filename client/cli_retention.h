/* cli_retention.h - the `hsq` commands of the retention and privacy tools:
 * purge, erase-user, export-user and fsck (docs/cli.md).
 *
 * They live apart from cli.c because two of them reach past the daemon:
 * `purge` runs hsqd's own core on the data directory when hsqd is down, and
 * `fsck` always works on the data directory, so this module links the daemon
 * core library. Each returns the CLI exit code (cli_args.h) after printing
 * its answer (text, or one JSON object with --json) or its error.
 */
#ifndef HSQ_CLIENT_CLI_RETENTION_H
#define HSQ_CLIENT_CLI_RETENTION_H

#include "client/cli_args.h"
#include "client/hsq.h"

/* c is an open client (borrowed). */
int hsq_cli_purge(const hsq_cli_cmd *cmd, hsq_client *c);
int hsq_cli_erase_user(const hsq_cli_cmd *cmd, hsq_client *c);
int hsq_cli_export_user(const hsq_cli_cmd *cmd, hsq_client *c);

/* Needs no daemon. */
int hsq_cli_fsck(const hsq_cli_cmd *cmd);

#endif
