"""WTForms forms of the hosted pages (Flask-WTF adds the `csrf_token` field to each)."""
from flask import request
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, Length, Optional, ValidationError

from ...schemas import normalize_email, storable_text


def _api_rule(check):
    """A WTForms validator applying one of the API's field rules (`check` returns the value, normalised, or raises
    ValueError): the pages accept and store exactly what the API would."""
    def validate(_form, field) -> None:
        try:
            field.data = check(field.data or "")
        except ValueError as exc:
            raise ValidationError(str(exc)) from None

    return validate


_storable, _address = _api_rule(storable_text), _api_rule(normalize_email)


class PageForm(FlaskForm):
    """A form of the pages: its fields read the posted form only.

    Flask-WTF also fills them from a request's uploaded files and from a JSON body, so a file part or a JSON number
    where text belongs reached the validators (Length measures it) and was a 500. The pages post form-encoded text.
    """

    class Meta:
        def wrap_formdata(self, form, formdata):
            """The posted form (not its files, nor a JSON body) when the page's form was submitted."""
            if formdata is not None and not hasattr(formdata, "getlist"):  # Flask-WTF's "take it from the request"
                return (request.form or None) if form.is_submitted() else None
            return formdata


class LoginForm(PageForm):
    """The sign-in page: address and password."""

    email = EmailField("Email", validators=[DataRequired(), Length(max=254), _storable, _address])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=4096)])


class SignupForm(PageForm):
    """The sign-up page: name (optional), address and password."""

    full_name = StringField("Name", validators=[Optional(), Length(max=200), _storable])
    email = EmailField("Email", validators=[DataRequired(), Length(max=254), _storable, _address])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=4096)])


class SignupCompleteForm(PageForm):
    """The page a signup link opens: name (optional) and the password that finishes the account."""

    full_name = StringField("Name", validators=[Optional(), Length(max=200), _storable])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=4096)])


class EmailForm(PageForm):
    """An address alone: asking for a password reset link."""

    email = EmailField("Email", validators=[DataRequired(), Length(max=254), _storable, _address])


class NewPasswordForm(PageForm):
    """The page a reset link opens: the new password."""

    new_password = PasswordField("New password", validators=[DataRequired(), Length(max=4096)])


class ProfileForm(PageForm):
    """The account page's profile: name, and an address (a new one is confirmed by mail)."""

    full_name = StringField("Name", validators=[Optional(), Length(max=200), _storable])
    email = EmailField("Email", validators=[DataRequired(), Length(max=254), _storable, _address])


class ChangePasswordForm(PageForm):
    """The account page's password change: the current password, then the new one."""

    current_password = PasswordField("Current password", validators=[DataRequired(), Length(max=4096)])
    new_password = PasswordField("New password", validators=[DataRequired(), Length(max=4096)])


class ButtonForm(PageForm):
    """A form that is only a button (sign out, resend): it carries the CSRF token and nothing else."""
