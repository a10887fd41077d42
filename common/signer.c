/* signer: placeholder, being written. */
