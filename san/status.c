/*
 * san status: this node, its PAN link, its certificates and its services,
 * from the running daemon or, offline, from the files
 * (join_status_main(), common/join.c).
 */
#include "join.h"
#include "san.h"

int
san_status_main(int argc, char **argv)
{
	return join_status_main(&san_role, argc, argv);
}
