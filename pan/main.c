/*
 * pan: thin entry point; each subcommand lives in its own file.
 */
#include "cli.h"
#include "util.h"
#include "pan.h"

static const struct cli_command commands[] = {
    {"init", pan_init_main,
     "create a deployment: Root CA, Node CA, "
     "CURVE keys, store"},
    {"run", pan_run_main,
     "run the PAN daemon: messaging, events, "
     "CA signer, control socket"},
    {"node", pan_node_main, "add (join string), list or remove nodes"},
    {"ca", pan_ca_main,
     "ca certs [--pem | --verify]: the deployment's CA "
     "certificates"},
    {"cert", pan_cert_main,
     "cert list|show: the certificates the deployment issued"},
    {"user", pan_user_main,
     "add, remove or list EST enrollment users (replicated to every PSN)"},
    {"template", pan_template_main,
     "add, list or remove certificate templates (EST labels)"},
    {"alarms", pan_alarms_main,
     "active alarms (--all: cleared ones "
     "too)"},
    {"log-level", pan_loglevel_main,
     "log-level set|list: runtime log levels per category and node"},
    {"status", pan_status_main,
     "show this node, its CA certificates "
     "and its services"},
};

int
main(int argc, char **argv)
{
	return cli_dispatch("pan", commands, ARRAY_SIZE(commands), argc, argv);
}
