//! edgellm-core
