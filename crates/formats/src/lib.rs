//! edgellm-formats
