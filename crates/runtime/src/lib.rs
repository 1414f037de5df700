//! edgellm-runtime
