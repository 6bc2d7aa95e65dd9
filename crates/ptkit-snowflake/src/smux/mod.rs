//! Sans-IO smux protocol version 2, compatible with xtaci/smux v1.5.16.
