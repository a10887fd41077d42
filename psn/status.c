/*
 * psn status: this node, its PAN link, its outbox, its certificates and
 * its services, from the running daemon or, offline, from the files
 * (join_status_main(), common/join.c).
 */
#include "join.h"
#include "psn.h"

int
psn_status_main(int argc, char **argv)
{
	return join_status_main(&psn_role, argc, argv);
}
