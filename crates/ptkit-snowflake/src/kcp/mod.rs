//! Sans-IO KCP compatible with kcp-go v5.6.1 under Snowflake settings.
