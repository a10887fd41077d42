/*
 * pan: the Primary Administration Node, the deployment's root CA.
 *
 * One entry point per subcommand; main.c only picks one.  Later issues add
 * the daemon (pan run), its CA signer process and the admin subcommands
 * that talk to it over the control socket.
 */
#ifndef ISELAB_PAN_H
#define ISELAB_PAN_H

/* Exit statuses shared by every subcommand (pan(8) EXIT STATUS). */
#define PAN_EXIT_OK	 0
#define PAN_EXIT_FAIL	 1 /* the operation failed; the message says why */
#define PAN_EXIT_USAGE	 2 /* bad command line */

/* Default CA key type: the product's internal CA uses RSA 4096. */
#define PAN_CA_KEY_DEFAULT "rsa:4096"

int pan_init_main(int argc, char **argv);
int pan_status_main(int argc, char **argv);

#endif
