"""WTForms forms of the hosted pages (Flask-WTF adds the `csrf_token` field to each)."""
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, Length, Optional, ValidationError

from ...schemas import normalize_email, storable_text


def _address(_form, field) -> None:
    """The API's address rules on the pages: checked and normalised alike (field.data becomes the normal form)."""
    try:
        field.data = normalize_email(field.data or "")
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def _storable(_form, field) -> None:
    """The API's rule on the pages: no text the database cannot store (it would fail the request, not the form)."""
    try:
        storable_text(field.data or "")
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254), _storable, _address])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=4096)])


class SignupForm(FlaskForm):
    full_name = StringField("Name", validators=[Optional(), Length(max=200), _storable])
    email = EmailField("Email", validators=[DataRequired(), Length(max=254), _storable, _address])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=4096)])


class SignupCompleteForm(FlaskForm):
    full_name = StringField("Name", validators=[Optional(), Length(max=200), _storable])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=4096)])


class EmailForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254), _storable, _address])


class NewPasswordForm(FlaskForm):
    new_password = PasswordField("New password", validators=[DataRequired(), Length(max=4096)])


class ProfileForm(FlaskForm):
    full_name = StringField("Name", validators=[Optional(), Length(max=200), _storable])
    email = EmailField("Email", validators=[DataRequired(), Length(max=254), _storable, _address])


class ChangePasswordForm(FlaskForm):
    current_password = PasswordField("Current password", validators=[DataRequired(), Length(max=4096)])
    new_password = PasswordField("New password", validators=[DataRequired(), Length(max=4096)])


class ButtonForm(FlaskForm):
    """A form that is only a button (sign out, resend): it carries the CSRF token and nothing else."""
