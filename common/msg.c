/* msg: placeholder */
