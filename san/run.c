/*
 * san run: the SAN daemon in the foreground.
 *
 * The shared member daemon (join_run_main(), common/join.c) keeps the
 * node's link to the PAN, its store and the control socket answering
 * `san status`; the SAN adds nothing yet.  Its CA signer (the SAN's Node
 * CA key) and the replica of the PAN's database come with later issues,
 * through the daemon's hooks.
 */
#include "certwatch.h"
#include "join.h"
#include "node.h"
#include "san.h"

static const char *const san_certs[] = {"node-ca.crt", "root-ca.crt", NULL};
static const char *const san_cert_labels[] = {"Node CA", "Root CA", NULL};
static const char *const san_services[] = {
    "Certificate Authority Service",
    NULL,
};

/* The PAN's Root CA is the PAN's to watch. */
static const struct certwatch_cert san_expiry[] = {
    {"Node CA", NODE_CA_DIR "/node-ca.crt"},
    {NULL, NULL},
};

const struct join_role san_role = {
    .role = NODE_ROLE_SAN,
    .name = "san",
    .title = "Secondary Administration Node",
    .certs = san_certs,
    .cert_labels = san_cert_labels,
    .services = san_services,
    .expiry = san_expiry,
};

int
san_run_main(int argc, char **argv)
{
	return join_run_main(&san_role, NULL, argc, argv);
}
