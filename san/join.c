/*
 * san join: make this host a SAN of a deployment.
 *
 * The shared join (common/join.c) does the work: it makes the Node CA key
 * and CSR ("Certificate Services Node CA - HOST"), presents the token and
 * saves the Node CA certificate the PAN's Root CA signed, with the chain
 * and the deployment config.  The SAN's own step is its (empty) store,
 * which becomes the PAN database's replica with a later issue.
 */
#include <stdio.h>

#include "join.h"
#include "node.h"
#include "san.h"
#include "store.h"
#include "util.h"

/* Longest path we build inside the data directory. */
#define SAN_PATH_MAX 4096

static int
san_finish(struct join_state *js, struct error *err)
{
	char path[SAN_PATH_MAX];
	const char *d = js->opts->datadir;
	struct store *st = NULL;

	if (join_files_mkdir(&js->files, d, NODE_STORE_DIR, 0700, err) == -1 ||
	    node_path(path, sizeof(path), d, NODE_STORE_DIR "/data.mdb", err) ==
	        -1 ||
	    join_files_add(&js->files, path, err) == -1 ||
	    node_path(path, sizeof(path), d, NODE_STORE_DIR "/lock.mdb", err) ==
	        -1 ||
	    join_files_add(&js->files, path, err) == -1 ||
	    node_path(path, sizeof(path), d, NODE_STORE_DIR, err) == -1)
		return -1;
	if (store_open(path, NULL, &st, err) == -1)
		return -1;
	store_close(st);
	return 0;
}

int
san_join_main(int argc, char **argv)
{
	return join_main(&san_role, san_finish, argc, argv);
}
