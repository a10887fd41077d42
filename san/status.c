/*
 * san status: this node, its PAN link, its certificates and its services.
 *
 * Asks the running daemon over the control socket; when none answers, the
 * offline view is built from the files of the data directory (node.conf,
 * deployment.conf, the certificates), needs no passphrase and changes
 * nothing.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "join.h"
#include "node.h"
#include "proc.h"
#include "san.h"
#include "util.h"

/* How long status waits for a running daemon. */
#define STATUS_TIMEOUT_MS 5000

int
san_status_main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"data-dir", required_argument, NULL, 'd'},
	    {"help", no_argument, NULL, 'H'},
	    {NULL, 0, NULL, 0},
	};
	static const char *const args[] = {"status"};
	struct node_identity id;
	struct error err = {{0}};
	const char *datadir = getenv(NODE_ENV_PREFIX "DATA_DIR");
	char *out = NULL, *errtext = NULL, *text;
	int c, status;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'd':
			datadir = optarg;
			break;
		case 'H':
			printf("usage: san status --data-dir DIR\n");
			return SAN_EXIT_OK;
		default:
			fprintf(stderr, "usage: san status --data-dir DIR\n");
			return SAN_EXIT_USAGE;
		}
	}
	if (datadir == NULL || datadir[0] == '\0' || optind != argc) {
		fprintf(stderr, "usage: san status --data-dir DIR\n");
		return SAN_EXIT_USAGE;
	}
	if (node_identity_read(datadir, &id, &err) == -1)
		goto fail;
	if (id.role != NODE_ROLE_SAN) {
		error_set(&err, "%s holds a %s node, not a san", datadir,
		          node_role_name(id.role));
		goto fail;
	}
	if (control_call(datadir, args, 1, STATUS_TIMEOUT_MS, &out, &errtext,
	                 &status, &err) == 0) {
		fputs(out, stdout);
		fputs(errtext, stderr);
		free(out);
		free(errtext);
		return status;
	}
	/* Not running (or not answering): what the files say. */
	if ((text = join_status_text(&san_role, datadir, NULL, &err)) == NULL)
		goto fail;
	fputs(text, stdout);
	free(text);
	return SAN_EXIT_OK;
fail:
	fprintf(stderr, "san status: %s\n", err.msg);
	return SAN_EXIT_FAIL;
}
