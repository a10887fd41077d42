/* csr: placeholder, being written. */
